"""One nuScenes sample in mmdet3d's info format (dataset ``nuscenes-sample``), read without the devkit.

Layout of one scene folder (as ``../shared/data/nuscenes-demo``, from mmdetection3d's
``demo/data/nuscenes``)::

    sample.json          {"categories": {name: index}, "sample": {timestamp, images, lidar_points, instances}}
    *.pcd.bin            the LIDAR_TOP sweep: float32 x, y, z, intensity, ring per point (lidar frame)
    *.jpg                the six camera images, 1600x900

``sample.images[<channel>]`` holds ``img_path``, ``cam2img`` (3x3 intrinsics),
``lidar2cam`` (4x4, through the ego poses at the lidar's and the camera's times, so it
includes the ego motion between them) and ``timestamp`` (seconds);
``sample.instances`` the 3D boxes: ``bbox_3d`` = x, y, z (the box's centre), dx, dy,
dz (size along the box's heading, across it, up), yaw (about z) in the lidar frame,
``bbox_label_3d`` indexing ``categories`` (-1: an object outside the 10 classes).

Scene id: the folder's name. World frame: the lidar frame (the same convention as the
``nuscenes`` reader: x forward, y left, z up, metres); one sweep (sweep 0, timestamp 0).
Frames: the cameras in ``cameras`` order, intrinsics ``cam2img``, ``cam_to_world`` =
inv(``lidar2cam``), ``timestamp`` = camera time - lidar time (seconds), no depth.

Labels from the boxes: a point inside a box (boundary included) takes the box's
class mapped to ``NUSCENES16`` by ``BOX_CLASS_TO_NUSCENES16`` (pedestrian -> person,
the others by name); a point in no box, or only in a box of label -1, is ignored (-1)
- boxes say nothing about road, buildings or vegetation. Where boxes overlap, the
smaller box wins. These labels are for checks of the object classes, not a benchmark.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import Field

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.config import FrozenConfig, LocalPath
from ovlift.content_hash import file_digests
from ovlift.datasets.base import Dataset, Frame, SceneSource, scene_folders
from ovlift.datasets.nuscenes import NUSCENES_CAMERAS, NUSCENES_IMAGE_HW, camera_frame, read_lidar_bin
from ovlift.errors import StageInputError
from ovlift.names import contained
from ovlift.vocabularies import NUSCENES16

SAMPLE_FILE = "sample.json"

BOX_CLASS_TO_NUSCENES16 = {
    "car": "car",
    "truck": "truck",
    "trailer": "trailer",
    "bus": "bus",
    "construction_vehicle": "construction vehicle",
    "bicycle": "bicycle",
    "motorcycle": "motorcycle",
    "pedestrian": "person",
    "traffic_cone": "traffic cone",
    "barrier": "barrier",
}
"""nuScenes detection class (mmdet3d's ``categories``) -> ``NUSCENES16`` class."""


class NuScenesSampleConfig(FrozenConfig):
    paths: tuple[LocalPath, ...] = Field(min_length=1)
    """Sample folders (each holding sample.json), or folders whose subfolders are samples."""
    cameras: tuple[str, ...] = Field(NUSCENES_CAMERAS, min_length=1)
    """Camera channels read as frames, in this order."""
    image_height: int = Field(NUSCENES_IMAGE_HW[0], ge=1)
    """Rows of the stored images (900 = no resize)."""
    image_width: int = Field(NUSCENES_IMAGE_HW[1], ge=1)
    """Columns of the stored images (1600 = no resize)."""


class NuScenesSampleDataset(Dataset[NuScenesSampleConfig]):
    """nuScenes samples as mmdet3d's ``sample.json`` + files; see the module docstring."""

    name = "nuscenes-sample"

    @cached_property
    def _folders(self) -> dict[str, Path]:
        """Scene id -> folder, found on first use (so a plan validates without its data)."""
        return scene_folders(
            "nuscenes-sample", self.config.paths, lambda p: (p / SAMPLE_FILE).is_file(), f"<scene>/{SAMPLE_FILE}"
        )

    def scene_ids(self) -> list[str]:
        return sorted(self._folders)

    def _sample(self, scene_id: str) -> tuple[dict, dict[int, str]]:
        """The scene's ``sample`` record and its label index -> class name."""
        if scene_id not in self._folders:
            raise StageInputError(f"nuscenes-sample: unknown scene '{scene_id}' (known: {self.scene_ids()})")
        path = self._folders[scene_id] / SAMPLE_FILE
        try:
            data = json.loads(path.read_text())
            sample, categories = data["sample"], data["categories"]
            missing = [c for c in self.config.cameras if c not in sample["images"]]
            if not isinstance(sample["lidar_points"]["lidar_path"], str):
                raise TypeError("sample.lidar_points.lidar_path is not a file name")
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise StageInputError(
                f"scene '{scene_id}': cannot read '{path}' as an mmdet3d nuScenes sample "
                f"(expected keys categories, sample.images, sample.lidar_points.lidar_path): {err!r}"
            ) from None
        if missing:
            raise StageInputError(
                f"scene '{scene_id}': '{path}' has no camera {missing} (it has {sorted(sample['images'])})"
            )
        return sample, {index: name for name, index in categories.items()}

    def _file(self, scene_id: str, name: str) -> Path:
        path = contained(self._folders[scene_id], name, f"scene '{scene_id}': {SAMPLE_FILE} names the file")
        if not path.is_file():
            raise StageInputError(f"scene '{scene_id}': file '{path}' is missing (named in {SAMPLE_FILE})")
        return path

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the config (but the paths), sample.json and the contents of the lidar and
        image files (``ovlift.content_hash`` remembers file digests)."""
        sample, _ = self._sample(scene_id)
        digest = hashlib.sha256(self.config.model_dump_json(exclude={"paths"}).encode())
        digest.update((self._folders[scene_id] / SAMPLE_FILE).read_bytes())
        names = [sample["lidar_points"]["lidar_path"]] + [sample["images"][c]["img_path"] for c in self.config.cameras]
        digest.update(";".join(file_digests([self._file(scene_id, n) for n in names])).encode())
        return digest.hexdigest()

    def load(self, scene_id: str) -> SceneSource:
        sample, class_names = self._sample(scene_id)
        points = read_lidar_bin(self._file(scene_id, sample["lidar_points"]["lidar_path"]))[:, :3]
        labels = box_labels(points, sample["instances"], class_names, f"scene '{scene_id}'")
        cameras = []
        for channel in self.config.cameras:
            camera = sample["images"][channel]
            lidar_to_camera = np.asarray(camera["lidar2cam"], np.float64)
            cameras.append(
                (
                    channel,
                    self._file(scene_id, camera["img_path"]),
                    np.asarray(camera["cam2img"], np.float64)[:3, :3],
                    np.linalg.inv(lidar_to_camera),
                    float(camera["timestamp"]) - float(sample["timestamp"]),
                )
            )
        size = (self.config.image_height, self.config.image_width)

        def read_frame(i: int) -> Frame:
            return camera_frame(*cameras[i], size)

        return SceneSource(
            scene_id=scene_id,
            points=np.ascontiguousarray(points, np.float32),
            frame_names=[c[0] for c in cameras],
            read_frame=read_frame,
            class_names=NUSCENES16.classes,
            labels=labels,
            sweep=np.zeros(len(points), np.int16),
            timestamp=np.zeros(len(points), np.float32),
        )


def points_in_box(points: np.ndarray, box: list[float]) -> np.ndarray:
    """(N,) whether each point is inside (or on) a box x, y, z (centre), dx, dy, dz, yaw (about z)."""
    x, y, z, dx, dy, dz, yaw = map(float, box)
    offset = np.asarray(points, np.float64)[:, :3] - (x, y, z)
    cos, sin = np.cos(yaw), np.sin(yaw)
    along = cos * offset[:, 0] + sin * offset[:, 1]  # the offset in the box's axes: rotated by -yaw
    across = -sin * offset[:, 0] + cos * offset[:, 1]
    return (np.abs(along) <= dx / 2) & (np.abs(across) <= dy / 2) & (np.abs(offset[:, 2]) <= dz / 2)


def box_labels(points: np.ndarray, boxes: list[dict], class_names: dict[int, str], where: str) -> np.ndarray:
    """(N,) NUSCENES16 label of each point from the boxes it lies in (the smallest box wins), -1 elsewhere."""
    labels = np.full(len(points), IGNORE_LABEL, np.int16)
    by_volume = sorted(boxes, key=lambda b: -float(np.prod(b["bbox_3d"][3:6])))
    for box in by_volume:  # smaller boxes are written later and win
        label = int(box["bbox_label_3d"])
        if label == -1:
            target = IGNORE_LABEL
        elif class_names.get(label) in BOX_CLASS_TO_NUSCENES16:
            target = NUSCENES16.index(BOX_CLASS_TO_NUSCENES16[class_names[label]])
        else:
            raise StageInputError(
                f"{where}: box label {label} ({class_names.get(label, 'not in categories')}) has no NUSCENES16 "
                f"class; expected one of {sorted(BOX_CLASS_TO_NUSCENES16)}"
            )
        labels[points_in_box(points, box["bbox_3d"])] = target
    return labels
