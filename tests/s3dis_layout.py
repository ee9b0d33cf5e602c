"""Writes toy rooms in the published S3DIS and 2D-3D-S layouts, for the ``s3dis`` reader's tests.

A room of ``tests/layout_scene.py`` becomes, as the two releases have it on disk:
``Stanford3dDataset_v1.2/Area_N/<room>/<room>.txt`` and ``Annotations/<class>_<k>.txt``
("x y z r g b", millimetre text), ``Area_N_alignmentAngle.txt``, and per view in
``<2D-3D-S>/area_N/data/``: ``rgb/`` (8-bit PNG), ``depth/`` (uint16 PNG, 1/512 m,
65535 = no reading), ``pose/`` (JSON with the published keys; ``camera_rt_matrix``
world-to-camera 3x4) and ``semantic/`` (RGB = base-256 index into
``assets/semantic_labels.json``), file names ``camera_<uuid>_<room>_frame_<k>_domain_<kind>``.

The toy room is the *aligned* room. On disk it is rotated about its bounding-box
centre by +angle (the scan's own orientation, which S3DIS's alignment angle undoes),
and views written to ``area_5b`` are in area_5b's own coordinates. The writer has
its own copies of those transforms (the 5b one in the inverse form another public
script publishes), so the tests check the reader against them, not against itself.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from layout_scene import LayoutScene
from PIL import Image

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.vocabularies import S3DIS13

TOY_TO_S3DIS = {
    "wall": "wall",
    "floor": "floor",
    "ceiling": "ceiling",
    "chair": "chair",
    "table": "table",
    "desk": "table",
    "sofa": "sofa",
    "bookshelf": "bookcase",
    "door": "door",
    "window": "window",
    "picture": "board",
    "cabinet": "stairs",  # S3DIS has a few 'stairs' objects; readers count them as clutter
}
"""Toy class -> S3DIS annotation class (anything else: clutter)."""
S3DIS_TO_AREA_5B = np.array(
    [[0.0, -1.0, 0.0, 6.22617759], [1.0, 0.0, 0.0, 4.09703582], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
"""S3DIS Area_5 -> area_5b coordinates, as a public 2D-3D-S projection script writes it
(``AREA_5B_CORRECTION``, applied as ``world_to_cam @ correction``)."""
MISSING_RGB = (13, 13, 13)
"""2D-3D-S's semantic colour where the mesh is missing (#0D0D0D, beyond the label list)."""


@dataclass
class WrittenRoom:
    scene_id: str
    points_on_disk: np.ndarray
    """(N, 3) points as the annotation files hold them (rotated, millimetre text), reader order."""
    points_aligned: np.ndarray
    """(N, 3) the toy's points in reader order (the aligned room)."""
    colors: np.ndarray
    labels: np.ndarray
    """(N,) S3DIS13 labels in reader order."""
    instances: np.ndarray
    """(N,) index of each point's annotation file in name order."""
    to_disk: np.ndarray
    """(4, 4) aligned toy room -> on-disk (S3DIS/2D-3D-S) coordinates."""
    frame_names: list[str] = field(default_factory=list)
    cam_to_world_on_disk: list[np.ndarray] = field(default_factory=list)
    """Colour camera poses in S3DIS's (unaligned) coordinates, per written frame."""
    pixel_labels: list[np.ndarray] = field(default_factory=list)
    """(H, W) S3DIS13 label each written semantic image encodes (ignore where missing)."""
    depth_m: list[np.ndarray] = field(default_factory=list)
    """(H, W) the depth each written depth image encodes, metres, 0 where missing."""
    views: list[int] = field(default_factory=list)


class S3DISLayout:
    """A tiny S3DIS + 2D-3D-S dataset under ``root``: ``root/s3dis`` and ``root/2d3ds``."""

    def __init__(self, root: Path) -> None:
        self.s3dis_root = root / "Stanford3dDataset_v1.2"
        self.images_root = root / "2d3ds"
        self.label_names = ["<UNK>_0_<UNK>_0_0"]
        self.angles: dict[int, dict[str, float]] = {}

    def room(
        self,
        scene: LayoutScene,
        area: int,
        room: str,
        image_areas: list[str],
        angle_deg: float = 0.0,
        point_stride: int = 1,
        missing_block: int = 0,
    ) -> WrittenRoom:
        """Write ``scene`` as room ``Area_<area>/<room>``, view i into 2D-3D-S folder
        ``image_areas[i]`` (as many views as names); the first ``missing_block`` x
        ``missing_block`` pixels of every image have no depth and no label."""
        toy = scene.scene
        keep = np.arange(0, len(toy.points), point_stride)
        centre = (toy.points[keep].max(0) + toy.points[keep].min(0)) / 2
        to_disk = _rotation_about(centre, angle_deg)
        on_disk = toy.points[keep] @ to_disk[:3, :3].T + to_disk[:3, 3]
        colors = np.clip(toy.instance_color[toy.point_instance[keep]], 0, 255).round().astype(np.uint8)
        classes = [TOY_TO_S3DIS.get(name, "clutter") for name in toy.instance_class]

        folder = self.s3dis_root / f"Area_{area}" / room
        (folder / "Annotations").mkdir(parents=True)
        _write_points(folder / f"{room}.txt", on_disk, colors)
        files = {}  # file name -> point indices (into keep)
        counts: dict[str, int] = {}
        for instance, cls in enumerate(classes):
            members = np.flatnonzero(toy.point_instance[keep] == instance)
            if len(members):
                counts[cls] = counts.get(cls, 0) + 1
                files[f"{cls}_{counts[cls]}.txt"] = members
                _write_points(folder / "Annotations" / f"{cls}_{counts[cls]}.txt", on_disk[members], colors[members])
        names = sorted(files)
        order = np.concatenate([files[n] for n in names])
        s3dis13 = [S3DIS13.index(c) if c in S3DIS13.classes else S3DIS13.index("clutter") for c in classes]
        # reread the text, as the reader will: the millimetre rounding is part of the layout
        disk_text = np.concatenate([np.loadtxt(folder / "Annotations" / n, ndmin=2) for n in names])
        written = WrittenRoom(
            scene_id=f"Area_{area}_{room}",
            points_on_disk=disk_text[:, :3],
            points_aligned=toy.points[keep][order],
            colors=colors[order],
            labels=np.array(s3dis13, np.int16)[toy.point_instance[keep][order]],
            instances=np.concatenate([np.full(len(files[n]), i, np.int32) for i, n in enumerate(names)]),
            to_disk=to_disk,
        )
        self.angles.setdefault(area, {})[room] = angle_deg
        self._write_angles(area)

        room_type, room_num = room.rsplit("_", 1)
        for view, image_area in enumerate(image_areas):
            pixel_names = [
                f"{S3DIS13.classes[s3dis13[i]]}_{100 + i}_{room_type}_{room_num}_{area}" for i in range(len(classes))
            ]
            self._write_view(scene, view, area, room, image_area, to_disk, pixel_names, missing_block, written)
        (self.images_root / "assets").mkdir(parents=True, exist_ok=True)
        (self.images_root / "assets" / "semantic_labels.json").write_text(json.dumps(self.label_names))
        return written

    def _write_view(
        self,
        scene: LayoutScene,
        view: int,
        area: int,
        room: str,
        image_area: str,
        to_disk: np.ndarray,
        pixel_names: list[str],
        missing_block: int,
        written: WrittenRoom,
    ) -> None:
        color, depth = scene.views[view].color, scene.views[view].depth
        assert color.color.shape[:2] == depth.depth.shape, "2D-3D-S colour and depth share size"
        uuid = hashlib.md5(f"{area}/{room}/{view // 2}".encode()).hexdigest()
        stem = f"camera_{uuid}_{room}_frame_{view}"
        data = self.images_root / image_area / "data"
        for kind in ("rgb", "depth", "pose", "semantic"):
            (data / kind).mkdir(parents=True, exist_ok=True)

        cam_to_world = to_disk @ color.cam_to_world
        in_file_frame = S3DIS_TO_AREA_5B @ cam_to_world if image_area == "area_5b" else cam_to_world
        world_to_cam = np.linalg.inv(in_file_frame)
        k = color.intrinsics
        pose = {
            "camera_k_matrix": k.tolist(),
            "field_of_view_rads": 2 * math.atan(color.color.shape[1] / 2 / k[0, 0]),
            "camera_original_rotation": [0.0, 0.0, 0.0],
            "rotation_from_original_to_point": [0.0, 0.0, 0.0],
            "point_uuid": uuid,
            "camera_location": in_file_frame[:3, 3].tolist(),
            "frame_num": view,
            "camera_rt_matrix": world_to_cam[:3].tolist(),
            "final_camera_rotation": [0.0, 0.0, 0.0],
            "camera_uuid": uuid,
            "room": f"{room}_{area}",
        }
        (data / "pose" / f"{stem}_domain_pose.json").write_text(json.dumps(pose, indent=4))
        Image.fromarray(color.color).save(data / "rgb" / f"{stem}_domain_rgb.png")

        raw = np.minimum(np.round(depth.depth.astype(np.float64) * 512), 65534).astype(np.uint16)
        raw[:missing_block, :missing_block] = 65535
        Image.fromarray(raw).save(data / "depth" / f"{stem}_domain_depth.png")

        index = np.array([self._label_index(n) for n in pixel_names])[color.instances]
        rgb = np.stack([(index >> 16) & 255, (index >> 8) & 255, index & 255], axis=-1).astype(np.uint8)
        rgb[:missing_block, :missing_block] = MISSING_RGB
        Image.fromarray(rgb).save(data / "semantic" / f"{stem}_domain_semantic.png")

        labels = np.array([S3DIS13.index(n.split("_")[0]) for n in pixel_names], np.int16)[color.instances]
        labels[:missing_block, :missing_block] = IGNORE_LABEL
        metres = raw.astype(np.float32) / 512
        metres[raw == 65535] = 0
        written.frame_names.append(f"{image_area}/{stem}")
        written.cam_to_world_on_disk.append(cam_to_world)
        written.pixel_labels.append(labels)
        written.depth_m.append(metres)
        written.views.append(view)

    def _label_index(self, name: str) -> int:
        if name not in self.label_names:
            self.label_names.append(name)
        return self.label_names.index(name)

    def _write_angles(self, area: int) -> None:
        lines = [
            f"## Global alignment angle per disjoint space in Area_{area} ##",
            "## Disjoint Space Name Global Alignment Angle ##",
        ]
        lines += [f"{room} {angle:g}" for room, angle in self.angles[area].items()]
        (self.s3dis_root / f"Area_{area}" / f"Area_{area}_alignmentAngle.txt").write_text("\n".join(lines) + "\n")


def _rotation_about(centre: np.ndarray, angle_deg: float) -> np.ndarray:
    """(4, 4) rotation about the z axis through ``centre`` by +``angle_deg``."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    rotate = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = -centre, centre
    return back @ rotate @ shift


def _write_points(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """S3DIS text: millimetre coordinates and integer colours, space separated."""
    np.savetxt(path, np.column_stack([points, colors]), fmt="%.3f %.3f %.3f %d %d %d")
