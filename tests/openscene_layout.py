"""Scenes written in OpenScene's preprocessed layout, as its scripts write them, at their sizes.

A scene is a box-shaped room (or street block) of points on its inner faces, a few points
behind the walls, and cameras inside whose depth is ray-cast against the box, so the
points a camera sees pass OpenScene's depth test and those behind the walls do not.
The writers follow ``scripts/preprocess/preprocess_{3d,2d}_{scannet,matterport,nuscenes}.py``
(transcribed where their arithmetic matters: ``openscene_colors``, ``adjust_intrinsic``,
``compute_mapping``); the import tests reuse them for OpenScene's fused features.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SCANNET_HW = (240, 320)
MATTERPORT_HW = (512, 640)
NUSCENES_HW = (450, 800)
NUSCENES_CAMERAS = ("back", "back_left", "back_right", "front", "front_left", "front_right")
NUSCENES_YAW_DEG = {"back": 180, "back_left": 110, "back_right": -110, "front": 0, "front_left": 55, "front_right": -55}


@dataclass
class Room:
    """Points on the inner faces of the box ``low``..``high`` (and ``outside`` rows behind it)."""

    low: np.ndarray
    high: np.ndarray
    points: np.ndarray
    """(N, 3) float32."""
    colors: np.ndarray
    """(N, 3) uint8."""
    labels: np.ndarray
    """(N,) class index, -1 unlabelled."""


def box_room(num_points: int, size=(6.0, 5.0, 3.0), num_classes: int = 20, seed: int = 0, origin=(0.0, 0.0, 0.0)):
    """A room of ``num_points`` points: 2 % behind the walls, 1 % exact duplicates of other rows."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(origin, np.float64), np.asarray(origin, np.float64) + size
    sx, sy, sz = size
    areas = np.array([sy * sz, sy * sz, sx * sz, sx * sz, sx * sy, sx * sy])
    face = rng.choice(6, num_points, p=areas / areas.sum())
    points = low + rng.random((num_points, 3)) * (high - low)
    axis, side = face // 2, face % 2
    points[np.arange(num_points), axis] = np.where(side == 1, high[axis], low[axis])
    behind = rng.random(num_points) < 0.02
    points[behind, 0] = low[0] - 2.0  # 2 m behind the wall at x = low
    duplicates = rng.choice(num_points, num_points // 100, replace=False)
    points[duplicates] = points[rng.choice(num_points, len(duplicates))]
    colors = rng.integers(0, 256, (num_points, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, num_points)
    labels[rng.random(num_points) < 0.1] = -1
    return Room(low, high, points.astype(np.float32), colors, labels.astype(np.int16))


def camera_pose(position, yaw_deg: float) -> np.ndarray:
    """Camera-to-world (OpenCV axes) of a level camera at ``position`` looking along ``yaw``."""
    yaw = math.radians(yaw_deg)
    forward, down = np.array([math.cos(yaw), math.sin(yaw), 0.0]), np.array([0.0, 0.0, -1.0])
    pose = np.eye(4)
    pose[:3, :3] = np.stack([np.cross(down, forward), down, forward], axis=1)
    pose[:3, 3] = position
    return pose


def render(room: Room, pose: np.ndarray, intrinsics: np.ndarray, hw: tuple[int, int]):
    """(z-depth in metres, RGB uint8) of the box's inner faces through each pixel centre."""
    v, u = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
    rays = np.stack(
        [(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1], np.ones_like(u)]
    )
    world = np.einsum("ij,jhw->hwi", pose[:3, :3], rays)
    origin = pose[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        exits = np.where(world > 0, (room.high - origin) / world, (room.low - origin) / world)
    depth = np.nanmin(np.where(exits > 0, exits, np.inf), axis=-1)  # rays have z = 1 in the camera
    hit = origin + world * depth[..., None]
    color = (np.floor(hit * 3) % 2 * 120 + 60 + np.floor(hit * 17) % 7 * 10).astype(np.uint8)
    return depth, color


def adjust_intrinsic(intrinsic: np.ndarray, intrinsic_image_dim, image_dim) -> np.ndarray:
    """OpenScene's ``preprocess_util.adjust_intrinsic`` (dims are (width, height))."""
    intrinsic = np.array(intrinsic, np.float64)
    if tuple(intrinsic_image_dim) == tuple(image_dim):
        return intrinsic
    resize_width = int(math.floor(image_dim[1] * float(intrinsic_image_dim[0]) / float(intrinsic_image_dim[1])))
    intrinsic[0, 0] *= float(resize_width) / float(intrinsic_image_dim[0])
    intrinsic[1, 1] *= float(image_dim[1]) / float(intrinsic_image_dim[1])
    intrinsic[0, 2] *= float(image_dim[0] - 1) / float(intrinsic_image_dim[0] - 1)
    intrinsic[1, 2] *= float(image_dim[1] - 1) / float(intrinsic_image_dim[1] - 1)
    return intrinsic


def make_intrinsic(fx, fy, mx, my) -> np.ndarray:
    """OpenScene's ``make_intrinsic``: a 4x4."""
    intrinsic = np.eye(4)
    intrinsic[0][0], intrinsic[1][1], intrinsic[0][2], intrinsic[1][2] = fx, fy, mx, my
    return intrinsic


def compute_mapping(camera_to_world, coords, depth, intrinsic, image_dim, vis_thres, cut_bound) -> np.ndarray:
    """OpenScene's ``PointCloudToImageMapper.compute_mapping`` (``fusion_util.py``): (N, 3)
    row, column, visible; ``depth`` None: in front only (nuScenes)."""
    mapping = np.zeros((3, coords.shape[0]), dtype=int)
    coords_new = np.concatenate([coords, np.ones([coords.shape[0], 1])], axis=1).T
    p = np.matmul(np.linalg.inv(camera_to_world), coords_new)
    p[0] = (p[0] * intrinsic[0][0]) / p[2] + intrinsic[0][2]
    p[1] = (p[1] * intrinsic[1][1]) / p[2] + intrinsic[1][2]
    pi = np.round(p).astype(int)
    inside_mask = (
        (pi[0] >= cut_bound)
        * (pi[1] >= cut_bound)
        * (pi[0] < image_dim[0] - cut_bound)
        * (pi[1] < image_dim[1] - cut_bound)
    )
    if depth is not None:
        depth_cur = depth[pi[1][inside_mask], pi[0][inside_mask]]
        occlusion_mask = np.abs(depth_cur - p[2][inside_mask]) <= vis_thres * depth_cur
        inside_mask[inside_mask] = occlusion_mask
    else:
        inside_mask = (p[2] > 0) * inside_mask
    mapping[0][inside_mask] = pi[1][inside_mask]
    mapping[1][inside_mask] = pi[0][inside_mask]
    mapping[2][inside_mask] = 1
    return mapping.T


def openscene_colors(rgb: np.ndarray) -> np.ndarray:
    """``preprocess_3d_*.py``: the PLY's colours (float32 rows) as ``/ 127.5 - 1``."""
    return np.asarray(rgb, np.float32) / 127.5 - 1


def write_pth(path: Path, coords, colors, labels, numpy1: bool = True) -> Path:
    """``torch.save((coords, colors, labels), path)``; ``numpy1``: with NumPy 1's global names
    (``numpy.core.multiarray``), as OpenScene's files were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save((coords, colors, labels), buffer)
    if not numpy1:
        path.write_bytes(buffer.getvalue())
        return path
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)
    return path


def ignore_255(labels: np.ndarray, dtype) -> np.ndarray:
    return np.where(np.asarray(labels) < 0, 255, labels).astype(dtype)


@dataclass
class WrittenFrame:
    name: str
    color: np.ndarray
    """What was encoded (JPEG: the file decodes close to it)."""
    depth_raw: np.ndarray | None
    intrinsics: np.ndarray
    """(3, 3) as the reader should give it."""
    cam_to_world: np.ndarray
    """As written to the file."""
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class WrittenScene:
    scene_id: str
    pth: Path
    room: Room
    frames: list[WrittenFrame]


def _write_color(path: Path, color: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(color).save(path, format="JPEG", quality=90)
    return path


def _write_depth(path: Path, raw: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw).save(path)  # 16-bit PNG, as imageio writes uint16
    return path


def write_scannet_scene(root: Path, scene_id: str, room: Room, views, split="val", numpy1=True, intrinsics_file=True):
    """``scannet_3d/<split>/<scene>_vh_clean_2.pth`` and ``scannet_2d/<scene>/`` with one frame per
    ``(index, pose)`` of ``views`` and ``scannet_2d/intrinsics.txt`` (the fusion's numbers)."""
    labels = ignore_255(room.labels, np.float64)  # remapper is float64
    pth = write_pth(
        root / "scannet_3d" / split / f"{scene_id}_vh_clean_2.pth",
        room.points,
        openscene_colors(room.colors),
        labels,
        numpy1,
    )
    intrinsics = adjust_intrinsic(make_intrinsic(577.870605, 577.870605, 319.5, 239.5), (640, 480), (320, 240))
    (root / "scannet_2d").mkdir(parents=True, exist_ok=True)
    if intrinsics_file:
        np.savetxt(root / "scannet_2d" / "intrinsics.txt", intrinsics)
    folder = root / "scannet_2d" / scene_id
    frames = []
    for index, pose in views:
        depth, color = render(room, pose, intrinsics, SCANNET_HW)
        raw = np.round(depth * 1000).astype(np.uint16)
        pose_path = folder / "pose" / f"{index}.txt"
        pose_path.parent.mkdir(parents=True, exist_ok=True)
        with open(pose_path, "w") as f:  # SensorData.save_mat_to_file: float32, '%f' per row
            for line in pose.astype(np.float32):
                np.savetxt(f, line[np.newaxis], fmt="%f")
        files = {
            "color": _write_color(folder / "color" / f"{index}.jpg", color),
            "depth": _write_depth(folder / "depth" / f"{index}.png", raw),
            "pose": pose_path,
        }
        frames.append(WrittenFrame(str(index), color, raw, intrinsics[:3, :3], np.loadtxt(pose_path), files))
    return WrittenScene(scene_id, pth, room, frames)


MATTERPORT_INTRINSICS = np.array([[1075.0, 0.0, 629.7], [0.0, 1075.0, 522.3], [0.0, 0.0, 1.0]])
"""A Matterport camera at 1280x1024 (its ``.conf`` numbers are of this order)."""


def write_matterport_region(root: Path, scene_id: str, room: Room, split="test", folder="matterport_3d", numpy1=True):
    """``<folder>/<split>/<scan>_region<N>.pth``: labels int64 from the vote, 255 unlabelled."""
    labels = ignore_255(room.labels, np.int64)
    pth = write_pth(
        root / folder / split / f"{scene_id}.pth", room.points, openscene_colors(room.colors), labels, numpy1
    )
    return WrittenScene(scene_id, pth, room, [])


def write_matterport_images(root: Path, scan: str, room: Room, views) -> list[WrittenFrame]:
    """``matterport_2d/<scan>/`` images, one per ``(name <pano>_i<c>_<y>, pose)`` of ``views``, rendered
    from ``room``: 640x512, depth 1/4000 m, per-image intrinsics scaled as OpenScene's."""
    folder = root / "matterport_2d" / scan
    intrinsics = adjust_intrinsic(MATTERPORT_INTRINSICS, (1280, 1024), (640, 512))
    frames = []
    for name, pose in views:
        depth, color = render(room, pose, intrinsics, MATTERPORT_HW)
        raw = np.round(depth * 4000).astype(np.uint16)
        pano, camera, yaw = name.split("_")
        for sub in ("pose", "intrinsic"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        np.savetxt(folder / "pose" / f"{name}.txt", pose)
        np.savetxt(folder / "intrinsic" / f"{name}.txt", intrinsics)
        files = {
            "color": _write_color(folder / "color" / f"{name}.jpg", color),
            "depth": _write_depth(folder / "depth" / f"{pano}_d{camera[1]}_{yaw}.png", raw),
            "pose": folder / "pose" / f"{name}.txt",
            "intrinsics": folder / "intrinsic" / f"{name}.txt",
        }
        frames.append(WrittenFrame(name, color, raw, intrinsics, pose, files))
    return frames


NUSCENES_INTRINSICS = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
"""A nuScenes camera at 1600x900."""


def write_nuscenes_scene(root: Path, scene_id: str, room: Room, position, split="val", numpy1=True):
    """``nuscenes_3d/<split>/<scene>.pth`` (colours: the scalar 0) and ``nuscenes_2d/<split>/<scene>/``:
    the six cameras at ``position``, 800x450, pose and K as ``.npy``."""
    labels = ignore_255(room.labels, np.float64)  # NUSCENES_CLASS_REMAP is float64
    pth = write_pth(root / "nuscenes_3d" / split / f"{scene_id}.pth", room.points, 0, labels, numpy1)
    folder = root / "nuscenes_2d" / split / scene_id
    intrinsics = adjust_intrinsic(NUSCENES_INTRINSICS, (1600, 900), (800, 450))
    frames = []
    for camera in NUSCENES_CAMERAS:
        pose = camera_pose(position, NUSCENES_YAW_DEG[camera])
        _, color = render(room, pose, intrinsics, NUSCENES_HW)
        for sub in ("pose", "K"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        np.save(folder / "pose" / f"{camera}.npy", pose)
        np.save(folder / "K" / f"{camera}.npy", intrinsics)
        files = {
            "color": _write_color(folder / "color" / f"{camera}.jpg", color),
            "pose": folder / "pose" / f"{camera}.npy",
            "intrinsics": folder / "K" / f"{camera}.npy",
        }
        frames.append(WrittenFrame(camera, color, None, intrinsics, pose, files))
    return WrittenScene(scene_id, pth, room, frames)
