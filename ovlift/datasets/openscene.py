"""OpenScene's preprocessed data (dataset ``openscene``): its ``.pth`` point clouds with the 2D
frames its preprocessing exports, for ScanNet, Matterport3D and nuScenes (``variant``).

Layout under ``root`` (OpenScene's ``data/``, as ``scripts/download_dataset.sh`` unpacks it;
``scripts/preprocess/README.md``, "Folder structure")::

    scannet_3d/<split>/<scene>_vh_clean_2.pth       (coords, colors, labels): ``openscene_points``
    scannet_2d/<scene>/color/<i>.jpg  depth/<i>.png  pose/<i>.txt
    scannet_2d/intrinsics.txt                        4x4, one for every scene
    matterport_3d/<split>/<scan>_region<N>.pth       (matterport_3d_40/80/160: OpenScene's K-class labels)
    matterport_2d/<scan>/color/<pano>_i<c>_<y>.jpg  depth/<pano>_d<c>_<y>.png
                         pose/<pano>_i<c>_<y>.txt  intrinsic/<pano>_i<c>_<y>.txt   (4x4, 3x3)
    nuscenes_3d/<split>/<scene>.pth                  colours: the scalar 0
    nuscenes_2d/<split>/<scene>/color/<cam>.jpg  pose/<cam>.npy  K/<cam>.npy      (4x4, 3x3)

Decisions, with where OpenScene's code fixes them (``scripts/preprocess/`` and
``scripts/feature_fusion/`` of pengsongyou/openscene at f3dda52, named by function or
variable rather than line):

- Points are the ``.pth`` rows exactly, in file order: no deduplication, voxelisation or
  cropping. OpenScene's fused features (``fusion_util.py`` ``save_fused_feature``,
  ``nuscenes_openseg.py``) carry ``mask_full``, a boolean mask over exactly these rows,
  and importing them relies on this order. Colours and labels: ``openscene_points``
  (``rgb / 127.5 - 1`` back to uint8; label 255 -> ``IGNORE_LABEL``); ``label_set``
  defaults to ``scannet20``, ``matterport21``, ``nuscenes16`` (``dataset/label_constants.py``).
- Scene ids: ScanNet's file name without ``_vh_clean_2.pth`` (``scannet_openseg.py``:
  ``split('_vh')[0]``), the others' without ``.pth``. A Matterport scene's scan is the id
  before its first ``_`` (``fusion_util.py`` ``get_matterport_camera_data``).
- ScanNet frames: every ``color/<i>.jpg``, by ``i`` (``scannet_openseg.py`` sorts them so);
  the export already kept 1 frame in 20 (``preprocess_2d_scannet.py --frame_skip 20``).
  Colour and depth are both 320x240 (``export_color_images`` / ``export_depth_images``
  resize with nearest), depth uint16 millimetres (``depth_scale`` 1000), and both use the
  one ``intrinsics.txt`` (the depth camera's 577.87 px at 640x480 scaled by
  ``adjust_intrinsic``: fx = fy = 288.94, cx = 159.5, cy = 119.5), as the fusion does:
  colour is treated as registered to depth. Without ``intrinsics.txt`` the fusion's own
  constants are used (``SCANNET_INTRINSICS``, 320x240 frames only). Poses are ScanNet's
  camera-to-world (``export_poses``), -inf where its tracker lost them (kept; ``input``
  marks them invalid).
- Matterport frames: the scan's images whose camera centre lies strictly inside the
  region's point bounding box, in name order (``get_matterport_camera_data``); a region
  with none takes the ``nearest_views`` cameras nearest its box centre (OpenScene on its
  test split only; here always, as ``matterport3d``). 640x512, depth uint16 at 1/4000 m
  (``matterport_openseg.py`` ``depth_scale`` 4000), per-image 3x3 intrinsics already scaled
  to 640x512, poses already in OpenCV axes (``preprocess_2d_matterport.py`` negates the y
  and z columns). The depth file is the colour name with ``i<c>`` -> ``d<c>`` and ``.png``.
- nuScenes frames: the six cameras ``back, back_left, back_right, front, front_left,
  front_right`` (``nuscenes_openseg.py`` ``cam_locs``) of the one key frame
  (``preprocess_2d_nuscenes.py`` keeps the last timestamp), 800x450, no depth, ``pose``
  camera-to-scene (``cam2scene.txt``), ``K`` scaled to 800x450. The fusion pairs only
  labelled points (labels != 255) but its ``mask_full`` still spans every ``.pth`` row.
  The points are every sweep of the last 0.5 s (``preprocess_3d_nuscenes.py``
  ``export_all_points``) without a sweep index, so ``sweep`` stays None.
- Intrinsics are used as stored: OpenScene scales the principal point by (W'-1)/(W-1),
  not the half-pixel rule of ``kernels.projection.scale_intrinsics`` (equal for ScanNet's
  centred 319.5, under a pixel apart for Matterport); projecting with the stored values is
  what OpenScene's fusion did. ``image_height``/``image_width`` may store frames smaller.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ovlift.config import LocalPath
from ovlift.content_hash import file_digests
from ovlift.datasets.base import Dataset, Frame, SceneSource
from ovlift.datasets.images import StoredImageSize, raw_depth, read_color_file, read_uint16_image, resized_frame
from ovlift.datasets.matterport import cameras_in_box
from ovlift.datasets.openscene_points import read_point_file
from ovlift.errors import StageInputError
from ovlift.names import check_name
from ovlift.vocabularies import get_vocabulary

Variant = Literal["scannet", "matterport", "nuscenes"]
LabelSet = Literal["scannet20", "matterport21", "matterport40", "matterport80", "matterport160", "nuscenes16"]
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "scannet": ("scannet20",),
    "matterport": ("matterport21", "matterport40", "matterport80", "matterport160"),
    "nuscenes": ("nuscenes16",),
}
"""Label sets of each variant's ``.pth`` files, the default first (OpenScene's ``label_constants.py``)."""
DEPTH_SCALE = {"scannet": 1000.0, "matterport": 4000.0}
"""Depth PNG units per metre (the fusion scripts' ``depth_scale``)."""
NUSCENES_CAMERAS = ("back", "back_left", "back_right", "front", "front_left", "front_right")
SCANNET_SUFFIX = "_vh_clean_2.pth"
SCANNET_INTRINSICS = np.array(
    [[577.870605 * 320 / 640, 0, 319.5 * 319 / 639], [0, 577.870605 * 240 / 480, 239.5 * 239 / 479], [0, 0, 1]]
)
"""``scannet_openseg.py``'s intrinsics: ScanNet's depth camera at 640x480 through ``adjust_intrinsic`` to 320x240."""
MATTERPORT_IMAGE = re.compile(r"([^_]+)_i(\d)_(\d)")
"""``<pano>_i<camera>_<yaw>``: the colour image names ``preprocess_2d_matterport.py`` parses."""


class OpenSceneConfig(StoredImageSize):
    root: LocalPath
    """OpenScene's ``data/`` folder, holding ``<variant>_3d/`` and ``<variant>_2d/``."""
    variant: Variant = "scannet"
    """Which of OpenScene's datasets (its folder names and frame conventions)."""
    splits: tuple[str, ...] | None = None
    """Split folders of the 3D folder to read (``train``, ``val``, ``test``); None: every one
    holding ``.pth`` files. They are also the dataset's named splits."""
    points_folder: str | None = None
    """The 3D folder in ``root``; None: ``<variant>_3d`` (``matterport_3d_160``: OpenScene's 160 classes)."""
    frames_folder: str | None = None
    """The 2D folder in ``root``; None: ``<variant>_2d``."""
    label_set: LabelSet | None = None
    """The classes the labels index; None: the variant's (scannet20, matterport21, nuscenes16)."""
    frame_stride: int = Field(1, ge=1)
    """Keep every k-th of a scene's frames (the ScanNet export already kept 1 in 20)."""
    depth_scale: float | None = Field(None, gt=0)
    """Depth PNG units per metre; None: OpenScene's (ScanNet 1000, Matterport 4000)."""
    nearest_views: int = Field(100, ge=0)
    """Matterport: cameras a region with none inside its box takes (nearest its centre); 0: an error."""
    cameras: tuple[str, ...] = Field(NUSCENES_CAMERAS, min_length=1)
    """nuScenes: the camera folders' names read as frames, in this order."""

    @field_validator("points_folder", "frames_folder")
    @classmethod
    def _one_folder(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "folder")

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_name(camera, "camera") for camera in value)

    @model_validator(mode="after")
    def _label_set_of_variant(self) -> OpenSceneConfig:
        if self.label_set is not None and self.label_set not in LABEL_SETS[self.variant]:
            raise ValueError(f"label_set '{self.label_set}' is not one of {self.variant}'s {LABEL_SETS[self.variant]}")
        return self

    @property
    def classes(self) -> tuple[str, tuple[str, ...]]:
        name = self.label_set or LABEL_SETS[self.variant][0]
        return name, get_vocabulary(name).classes


@dataclass(frozen=True)
class FrameFiles:
    """Where one frame's files are."""

    name: str
    color: Path
    depth: Path | None
    pose: Path
    intrinsics: Path | None
    """None: ``SCANNET_INTRINSICS``."""

    def paths(self) -> list[Path]:
        return [p for p in (self.color, self.depth, self.pose, self.intrinsics) if p is not None]


class OpenSceneDataset(Dataset[OpenSceneConfig]):
    """OpenScene's preprocessed ScanNet, Matterport3D or nuScenes; see the module docstring."""

    name = "openscene"

    @property
    def _points_root(self) -> Path:
        return Path(self.config.root) / (self.config.points_folder or f"{self.config.variant}_3d")

    @property
    def _frames_root(self) -> Path:
        return Path(self.config.root) / (self.config.frames_folder or f"{self.config.variant}_2d")

    @cached_property
    def _scenes(self) -> dict[str, tuple[str, Path]]:
        """Scene id -> (split, ``.pth`` file), found on first use (so a plan validates without its data)."""
        root = self._points_root
        if not root.is_dir():
            raise FileNotFoundError(f"openscene: '{root}' is not a folder (expected {self.config.variant}'s 3D folder)")
        splits = self.config.splits or tuple(
            sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.pth")))
        )
        if not splits:
            raise FileNotFoundError(f"openscene: no split folder with .pth files in '{root}' (expected <split>/*.pth)")
        scenes: dict[str, tuple[str, Path]] = {}
        for split in splits:
            folder = root / check_name(split, "openscene: split")
            files = sorted(folder.glob("*.pth")) if folder.is_dir() else []
            if not files:
                raise FileNotFoundError(f"openscene: no .pth files in '{folder}' (split '{split}')")
            for path in files:
                scene_id = self._scene_id(path)
                if scene_id in scenes:
                    raise ValueError(
                        f"openscene: scene '{scene_id}' is in two splits: {scenes[scene_id][1]} and {path}"
                    )
                scenes[scene_id] = (split, path)
        return scenes

    def _scene_id(self, path: Path) -> str:
        suffix = SCANNET_SUFFIX if self.config.variant == "scannet" else ".pth"
        if not path.name.endswith(suffix) or path.name == suffix:
            raise ValueError(f"openscene: '{path}' is not named <scene>{suffix} (OpenScene's {self.config.variant})")
        return check_name(path.name[: -len(suffix)], f"openscene: the scene id of '{path}'")

    def scene_ids(self) -> list[str]:
        return sorted(self._scenes)

    def named_splits(self) -> dict[str, list[str]]:
        splits: dict[str, list[str]] = {}
        for scene_id, (split, _) in sorted(self._scenes.items()):
            splits.setdefault(split, []).append(scene_id)
        return splits

    def _point_file(self, scene_id: str) -> Path:
        if scene_id not in self._scenes:
            raise KeyError(f"openscene: no scene '{scene_id}' under '{self._points_root}'")
        return self._scenes[scene_id][1]

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the config (but its folders) and the contents of the ``.pth`` and every kept
        frame's files (``ovlift.content_hash`` remembers digests, so this is quick)."""
        exclude = {"root", "points_folder", "frames_folder", "splits"}
        digest = hashlib.sha256(self.config.model_dump_json(exclude=exclude).encode())
        digest.update(scene_id.encode())
        frames = self._frames(scene_id, self._points(scene_id).points)
        files = [self._point_file(scene_id), *(p for f in frames for p in f.paths())]
        digest.update(";".join(file_digests(files)).encode())
        return digest.hexdigest()

    def _points(self, scene_id: str):
        label_set, classes = self.config.classes
        return read_point_file(self._point_file(scene_id), scene_id, classes, label_set)

    def load(self, scene_id: str) -> SceneSource:
        cloud = self._points(scene_id)
        frames = self._frames(scene_id, cloud.points)
        return SceneSource(
            scene_id=scene_id,
            points=cloud.points,
            colors=cloud.colors,
            labels=cloud.labels,
            class_names=self.config.classes[1],
            frame_names=[f.name for f in frames],
            read_frame=lambda i: resized_frame(self._read_frame(scene_id, frames[i]), self.config.image_size),
        )

    # frames

    def _frames(self, scene_id: str, points: np.ndarray) -> list[FrameFiles]:
        variant = self.config.variant
        if variant == "scannet":
            frames = self._scannet_frames(scene_id)
        elif variant == "matterport":
            frames = self._matterport_frames(scene_id, points)
        else:
            frames = self._nuscenes_frames(scene_id)
        return frames[:: self.config.frame_stride]

    def _folder(self, scene_id: str, *parts: str) -> Path:
        folder = self._frames_root.joinpath(*parts)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"scene '{scene_id}': no frames folder '{folder}' (expected OpenScene's {self._frames_root.name} "
                "layout: color/, depth/, pose/)"
            )
        return folder

    def _scannet_frames(self, scene_id: str) -> list[FrameFiles]:
        folder = self._folder(scene_id, scene_id)
        indices = []
        for path in (folder / "color").glob("*.jpg"):
            if not path.stem.isdigit():
                raise ValueError(f"scene '{scene_id}': '{path}' is not named <frame index>.jpg (OpenScene's export)")
            indices.append(int(path.stem))
        if not indices:
            raise FileNotFoundError(f"scene '{scene_id}': no <i>.jpg frames in '{folder / 'color'}'")
        intrinsics = self._frames_root / "intrinsics.txt"
        return [
            FrameFiles(
                str(i),
                folder / "color" / f"{i}.jpg",
                folder / "depth" / f"{i}.png",
                folder / "pose" / f"{i}.txt",
                intrinsics if intrinsics.is_file() else None,
            )
            for i in sorted(indices)
        ]

    def _matterport_frames(self, scene_id: str, points: np.ndarray) -> list[FrameFiles]:
        scan = scene_id.split("_")[0]
        images, centres = self._scan_cameras(scene_id, scan)
        chosen = cameras_in_box(centres, points.min(axis=0), points.max(axis=0), self.config.nearest_views)
        if len(chosen) == 0:
            raise ValueError(
                f"scene '{scene_id}': no camera of scan '{scan}' inside the region's box "
                f"{points.min(axis=0).tolist()}..{points.max(axis=0).tolist()} (nearest_views=0)"
            )
        return [images[i] for i in chosen]

    def _scan_cameras(self, scene_id: str, scan: str) -> tuple[list[FrameFiles], np.ndarray]:
        """A scan's images and camera centres (read once: every region of the scan chooses from them)."""
        if scan not in self._scan_cache:
            folder = self._folder(scene_id, check_name(scan, f"scene '{scene_id}': scan"))
            images = []
            for path in sorted((folder / "color").glob("*.jpg")):
                match = MATTERPORT_IMAGE.fullmatch(path.stem)
                if match is None:
                    raise ValueError(f"scene '{scene_id}': '{path}' is not named <pano>_i<camera>_<yaw>.jpg")
                pano, camera, yaw = match.groups()
                depth = folder / "depth" / f"{pano}_d{camera}_{yaw}.png"
                intrinsics = folder / "intrinsic" / f"{path.stem}.txt"
                images.append(FrameFiles(path.stem, path, depth, folder / "pose" / f"{path.stem}.txt", intrinsics))
            if not images:
                raise FileNotFoundError(f"scene '{scene_id}': no images in '{folder / 'color'}'")
            centres = np.array([read_matrix(scene_id, f.pose, (4, 4), "pose")[:3, 3] for f in images])
            self._scan_cache[scan] = (images, centres)
        return self._scan_cache[scan]

    @cached_property
    def _scan_cache(self) -> dict[str, tuple[list[FrameFiles], np.ndarray]]:
        return {}

    def _nuscenes_frames(self, scene_id: str) -> list[FrameFiles]:
        folder = self._folder(scene_id, self._scenes[scene_id][0], scene_id)
        return [
            FrameFiles(
                camera,
                folder / "color" / f"{camera}.jpg",
                None,
                folder / "pose" / f"{camera}.npy",
                folder / "K" / f"{camera}.npy",
            )
            for camera in self.config.cameras
        ]

    def _read_frame(self, scene_id: str, files: FrameFiles) -> Frame:
        color, color_file = read_color_file(files.color)
        depth = depth_raw = None
        if files.depth is not None:
            scale = self.config.depth_scale or DEPTH_SCALE[self.config.variant]
            raw = read_uint16_image(files.depth, scene_id, f"OpenScene's uint16 depth PNG ({scale:g} per metre)")
            if raw.shape != color.shape[:2]:
                raise StageInputError(
                    f"scene '{scene_id}': {files.depth} is {raw.shape} but {files.color.name} is {color.shape[:2]}; "
                    "expected OpenScene's depth at its colour image's size"
                )
            depth, depth_raw = raw_depth(raw, scale)  # 0 stays 0: no measurement
        if files.intrinsics is None:
            if color.shape[:2] != (240, 320):
                raise StageInputError(
                    f"scene '{scene_id}': {files.color} is {color.shape[:2]}; without "
                    f"{self._frames_root / 'intrinsics.txt'} only OpenScene's 320x240 frames have known intrinsics"
                )
            intrinsics = SCANNET_INTRINSICS.copy()
        else:
            intrinsics = read_matrix(scene_id, files.intrinsics, (3, 3), "intrinsics")
        pose = read_matrix(scene_id, files.pose, (4, 4), "camera-to-world pose")
        return Frame(
            name=files.name,
            color=color,
            color_file=color_file,
            depth=depth,
            depth_raw=depth_raw,
            intrinsics=intrinsics,
            cam_to_world=pose,
        )


def read_matrix(scene_id: str, path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """A matrix from a text (``np.savetxt``) or ``.npy`` file; (3, 3) also takes the top-left
    of a 4x4 (ScanNet's ``intrinsics.txt``). Errors name the scene, the file and the shape."""
    try:
        matrix = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except FileNotFoundError:
        raise FileNotFoundError(f"scene '{scene_id}': missing {path} (OpenScene's {what} file)") from None
    except (OSError, ValueError) as err:
        raise StageInputError(f"scene '{scene_id}': {path}: cannot read a {what} matrix ({err})") from None
    matrix = np.asarray(matrix)
    if shape == (3, 3) and matrix.shape == (4, 4):
        matrix = matrix[:3, :3]
    if matrix.shape != shape or matrix.dtype.kind not in "fiu":
        raise StageInputError(
            f"scene '{scene_id}': {path}: expected OpenScene's {shape[0]}x{shape[1]} {what}, "
            f"found {matrix.dtype} {matrix.shape}"
        )
    return matrix.astype(np.float64)
