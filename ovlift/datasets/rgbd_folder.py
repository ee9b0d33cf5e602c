"""Posed RGB-D folders (dataset ``rgbd-folder``): 7-Scenes, 3DMatch, tsdf-fusion.

Layout of one scene folder::

    camera-intrinsics.txt              3x3 pinhole intrinsics (pixels)
    [seq-XX/]frame-XXXXXX.color.{jpg,png}
    [seq-XX/]frame-XXXXXX.depth.png    uint16, ``depth_scale`` units per metre, 0 invalid
    [seq-XX/]frame-XXXXXX.pose.txt     4x4 camera-to-world (metres)

Optional, for sensors whose colour camera is not the depth camera (7-Scenes and
3DMatch publish neither: their colour is taken as registered to depth)::

    color-intrinsics.txt               3x3 intrinsics of the colour images; camera-intrinsics.txt
                                       is then the depth camera's, and the sizes may differ
    depth-to-color.txt                 4x4 rigid depth-camera -> colour-camera transform (metres)

With either file the poses in ``frame-*.pose.txt`` are the depth camera's (the
camera the scene was reconstructed from, as tsdf-fusion uses them); the colour
camera's pose is ``pose @ inv(depth_to_color)``.

Frames may sit in the folder itself or in ``seq-*`` subfolders (taken in name
order). Such data has no point cloud: one is built by back-projecting the depth
of every ``cloud_frame_stride``-th frame and averaging it per voxel (each point
coloured from the colour image at its projection, the nearest pixel, clamped to
the image).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from ovlift.config import FrozenConfig, LocalPath
from ovlift.content_hash import file_digests
from ovlift.datasets.base import Dataset, Frame, RawDepth, SceneSource, scene_folders
from ovlift.datasets.images import raw_depth, read_color_file, read_image, read_matrix
from ovlift.kernels.geometry import backproject_depth, rigid_poses
from ovlift.kernels.projection import project_points, rigid_inverse
from ovlift.kernels.voxel import voxel_downsample
from ovlift.progress import progress

INTRINSICS_FILE = "camera-intrinsics.txt"
COLOR_INTRINSICS_FILE = "color-intrinsics.txt"
DEPTH_TO_COLOR_FILE = "depth-to-color.txt"


class RGBDFolderConfig(FrozenConfig):
    paths: tuple[LocalPath, ...] = Field(min_length=1)
    """Scene folders, or folders whose subfolders are scenes (each holding camera-intrinsics.txt)."""
    frame_stride: int = Field(1, ge=1)
    """Ingest every k-th frame."""
    cloud_frame_stride: int = Field(10, ge=1)
    """Build the point cloud from every k-th ingested frame."""
    voxel_size_m: float = Field(0.02, gt=0)
    """Voxel edge of the point cloud's downsampling."""
    depth_scale: float = Field(1000.0, gt=0)
    """Raw depth units per metre (1000: millimetres)."""
    invalid_depth_raw: int = 65535
    """Raw depth value that also means 'no measurement' (besides 0), as 7-Scenes writes it."""
    min_depth_m: float = Field(0.1, ge=0)
    """Depth below this is not used for the point cloud."""
    max_depth_m: float = Field(4.0, gt=0)
    """Depth beyond this is not used for the point cloud (Kinect noise grows with depth^2)."""


class RGBDFolderDataset(Dataset[RGBDFolderConfig]):
    """Posed RGB-D frames in the 7-Scenes / 3DMatch layout; see the module docstring."""

    name = "rgbd-folder"

    @cached_property
    def _folders(self) -> dict[str, Path]:
        """Scene id -> folder, found on first use (so a plan validates without its data)."""
        return scene_folders(
            "rgbd-folder", self.config.paths, lambda p: (p / INTRINSICS_FILE).is_file(), f"<scene>/{INTRINSICS_FILE}"
        )

    def scene_ids(self) -> list[str]:
        return sorted(self._folders)

    def _frames(self, scene_id: str) -> list[tuple[str, Path]]:
        """(name, path prefix) of every ingested frame, e.g. ('seq-01/frame-000010', ...)."""
        folder = self._folders[scene_id]
        dirs = [folder] + sorted(d for d in folder.glob("seq-*") if d.is_dir())
        frames = []
        for d in dirs:
            for pose in sorted(d.glob("frame-*.pose.txt")):
                prefix = pose.with_name(pose.name.removesuffix(".pose.txt"))
                frames.append((str(prefix.relative_to(folder)), prefix))
        if not frames:
            raise FileNotFoundError(f"scene '{scene_id}': no frame-*.pose.txt in {folder} or its seq-* folders")
        return frames[:: self.config.frame_stride]

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the config, intrinsics, and every frame's name, pose and image contents
        (``ovlift.content_hash`` remembers image digests, so an unchanged scene is quick)."""
        digest = hashlib.sha256(self.config.model_dump_json(exclude={"paths"}).encode())
        folder = self._folders[scene_id]
        for name in (INTRINSICS_FILE, COLOR_INTRINSICS_FILE, DEPTH_TO_COLOR_FILE):
            if (folder / name).is_file():
                digest.update(name.encode() + (folder / name).read_bytes())
        frames = self._frames(scene_id)
        images = [
            p for _, prefix in frames for p in (_color_path(prefix), prefix.with_name(prefix.name + ".depth.png"))
        ]
        for name, prefix in frames:
            digest.update(name.encode())
            digest.update(prefix.with_name(prefix.name + ".pose.txt").read_bytes())
        digest.update(";".join(file_digests(images)).encode())
        return digest.hexdigest()

    def load(self, scene_id: str) -> SceneSource:
        folder = self._folders[scene_id]
        intrinsics = read_matrix(folder / INTRINSICS_FILE, (3, 3))
        color_k, depth_to_color = (
            _optional_matrix(folder / COLOR_INTRINSICS_FILE, (3, 3)),
            _optional_matrix(folder / DEPTH_TO_COLOR_FILE, (4, 4)),
        )
        separate = color_k is not None or depth_to_color is not None
        if depth_to_color is None:
            depth_to_color = np.eye(4)
        color_from_depth_pose = np.linalg.inv(depth_to_color)
        frames = self._frames(scene_id)

        def read_frame(i: int) -> Frame:
            name, prefix = frames[i]
            pose = read_matrix(prefix.with_name(prefix.name + ".pose.txt"), (4, 4))
            color, color_file = read_color_file(_color_path(prefix))
            depth, depth_raw = _read_depth(prefix.with_name(prefix.name + ".depth.png"), self.config)
            return Frame(
                name=name,
                color=color,
                color_file=color_file,
                depth=depth,
                depth_raw=depth_raw,
                intrinsics=color_k if color_k is not None else intrinsics,
                cam_to_world=pose @ color_from_depth_pose if separate else pose,
                depth_intrinsics=intrinsics if separate else None,
                depth_to_color=depth_to_color if separate else None,
            )

        points, colors = self._build_cloud(scene_id, read_frame, len(frames))
        return SceneSource(
            scene_id=scene_id,
            points=points,
            colors=colors,
            frame_names=[name for name, _ in frames],
            read_frame=read_frame,
        )

    def cloud_frames(self, num_frames: int) -> range:
        """Indices (into the ingested frames) that the point cloud is built from."""
        return range(0, num_frames, self.config.cloud_frame_stride)

    def _build_cloud(self, scene_id: str, read_frame, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        chunks, colors = [], []
        for i in progress(self.cloud_frames(num_frames), f"{scene_id}: back-projecting depth", unit="frame"):
            frame = read_frame(i)
            pose, valid = rigid_poses(torch.from_numpy(frame.cam_to_world)[None])  # as the input stage stores it
            if frame.depth is None or not bool(valid[0]):
                continue
            depth_k, depth_to_color = frame.depth_intrinsics, frame.depth_to_color
            depth_pose = pose[0] if depth_to_color is None else pose[0] @ torch.from_numpy(depth_to_color)
            pts, index = backproject_depth(
                torch.from_numpy(frame.depth),
                torch.from_numpy(frame.intrinsics if depth_k is None else depth_k),
                depth_pose,
                cfg.min_depth_m,
                cfg.max_depth_m,
            )
            chunks.append(pts)
            colors.append(_colors_at(frame, pose[0], pts, index))
        if not chunks:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        points, (mean_color,), _ = voxel_downsample(torch.cat(chunks), cfg.voxel_size_m, torch.cat(colors))
        return points.float().numpy(), mean_color.round().clamp(0, 255).to(torch.uint8).numpy()


def _colors_at(frame: Frame, cam_to_world: torch.Tensor, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(M, 3) colour of back-projected points: the depth pixel's own colour when colour is
    registered to depth, else the colour image at the point's nearest projected pixel (clamped)."""
    color = torch.from_numpy(frame.color)
    if frame.depth_intrinsics is None:
        return color.reshape(-1, 3)[index]
    z, x, y = project_points(points, rigid_inverse(cam_to_world)[None], torch.from_numpy(frame.intrinsics)[None])
    rows = torch.round(y[0]).clamp(0, color.shape[0] - 1).long()
    cols = torch.round(x[0]).clamp(0, color.shape[1] - 1).long()
    return color[rows, cols]


def _optional_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    return read_matrix(path, shape) if path.is_file() else None


def _color_path(prefix: Path) -> Path:
    for ext in (".color.jpg", ".color.png"):
        path = prefix.with_name(prefix.name + ext)
        if path.is_file():
            return path
    raise FileNotFoundError(f"no colour image {prefix.name}.color.jpg or .color.png in {prefix.parent}")


def _read_depth(path: Path, config: RGBDFolderConfig) -> tuple[np.ndarray, RawDepth | None]:
    raw = read_image(path, expected=f"a uint16 depth PNG ({config.depth_scale:g} per metre)").astype(np.int64)
    if raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel depth image, found shape {raw.shape}")
    return raw_depth(raw, config.depth_scale, missing=config.invalid_depth_raw)
