"""nuScenes through the official ``nuscenes-devkit`` (dataset ``nuscenes``): LiDAR sweeps and six cameras.

Scenes. One scene per key frame (a nuScenes *sample*), named ``<scene name>-<k>``
with k the sample's index within its nuScenes scene, three digits:
``scene-0061-000``, ``scene-0061-001``, ... CLIP2Scene trains on key frames, each
with its own few sweeps, so a key frame is the unit a stage caches.

World frame. The key frame's LIDAR_TOP sensor frame (x forward, y left, z up,
metres). Every sweep's points are registered into it through the ego poses:
sweep lidar -> its ego (calibrated_sensor) -> global (its ego_pose) -> key-frame
ego -> key-frame lidar. Points within one sweep are not motion-compensated (the
devkit's own multi-sweep aggregation does not either), and no points are dropped
(mmdet3d drops sweep points within 1 m of the sensor; the ego car's own returns are
labelled ``vehicle.ego`` -> ignore in the key frame).

Points. The key-frame sweep (``samples/LIDAR_TOP/*.pcd.bin``, float32 x, y, z,
intensity, ring) and up to ``num_sweeps`` earlier sweeps, found by following the
LIDAR_TOP sample_data ``prev`` links (``sweeps/`` files, and earlier key frames'
``samples/`` files, which are sweeps too). Per point: ``sweep`` (0 = key frame,
k = k-th earlier sweep) and ``timestamp`` (seconds relative to the key-frame lidar,
<= 0). Fewer sweeps near a scene's start. Intensity and ring are not kept.

Cameras. The sample's camera images in ``cameras`` order, frame names the channel
(``CAM_FRONT``); nuScenes camera frames already have OpenCV axes. Intrinsics are
calibrated_sensor ``camera_intrinsic``; ``cam_to_world`` is camera -> ego -> global
through the camera's *own* ego pose (its own timestamp), then global -> key-frame
lidar, so it includes the ego motion between the camera's exposure and the lidar
key frame (0.1-0.4 m at city speeds). Frame ``timestamp``: seconds relative to the
key-frame lidar. No depth. Images may be resized (``image_height``/``image_width``),
intrinsics scaled with ``kernels.projection.scale_intrinsics``.

Labels. nuScenes-lidarseg (``lidarseg/<version>/<token>_lidarseg.bin``, uint8 per
key-frame point, 32 general classes) mapped to the 16 classes of the lidarseg
challenge by ``LIDARSEG_TO_NUSCENES16``: the devkit's own challenge mapping
(``nuscenes.eval.lidarseg.utils.LidarsegClassMapper.get_fine2coarse``, the same table
as mmdet3d's and OpenScene's ``labels_map``), whose coarse indices 1..16 are
``NUSCENES16``'s 0..15; noise, animal, wheelchair, stroller, personal mobility,
ambulance, police car, debris, pushable/pullable, bicycle rack, static.other and
vehicle.ego are ignored (-1). The general-class indices are looked up by name in the
category table (its ``index`` field). Sweep points have no labels (-1). Without
lidarseg (or with ``lidarseg: false``) labels are None.

The devkit is imported inside functions, so ``import ovlift`` does not need it. It
loads every table of a version on first use (seconds for v1.0-mini, about a minute
and a few GB for v1.0-trainval); a process keeps the last two databases it loaded
(keyed by dataroot, version and the tables' sizes and mtimes), as flow workers
load the plan again for every scene.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ovlift.cache_schema import IGNORE_LABEL
from ovlift.config import FrozenConfig, LocalPath
from ovlift.datasets.base import Dataset, Frame, SceneSource
from ovlift.datasets.images import read_color_file, resized_color
from ovlift.errors import StageInputError
from ovlift.names import contained
from ovlift.vocabularies import NUSCENES16

NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
"""The six cameras, clockwise from the front."""
NUSCENES_IMAGE_HW = (900, 1600)
"""Size of every nuScenes camera image (rows, cols)."""
LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_VALUES_PER_POINT = 5
"""A ``.pcd.bin`` holds float32 x, y, z, intensity, ring per point."""

LIDARSEG_TO_NUSCENES16: dict[str, str | None] = {
    "noise": None,
    "animal": None,
    "human.pedestrian.adult": "person",
    "human.pedestrian.child": "person",
    "human.pedestrian.construction_worker": "person",
    "human.pedestrian.personal_mobility": None,
    "human.pedestrian.police_officer": "person",
    "human.pedestrian.stroller": None,
    "human.pedestrian.wheelchair": None,
    "movable_object.barrier": "barrier",
    "movable_object.debris": None,
    "movable_object.pushable_pullable": None,
    "movable_object.trafficcone": "traffic cone",
    "static_object.bicycle_rack": None,
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction vehicle",
    "vehicle.emergency.ambulance": None,
    "vehicle.emergency.police": None,
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "drivable surface",
    "flat.other": "other flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": None,
    "static.vegetation": "vegetation",
    "vehicle.ego": None,
}
"""nuScenes-lidarseg general class -> ``NUSCENES16`` class (None = ignore): the lidarseg
challenge's 32 -> 16 mapping (devkit ``LidarsegClassMapper.get_fine2coarse``)."""


class NuScenesConfig(FrozenConfig):
    dataroot: LocalPath
    """The nuScenes root folder: holds ``<version>/`` (tables), ``samples/``, ``sweeps/``, ``lidarseg/``."""
    version: str = "v1.0-mini"
    """Table version, the folder under ``dataroot``: ``v1.0-mini``, ``v1.0-trainval``, ``v1.0-test``."""
    splits: tuple[str, ...] | None = None
    """nuScenes split names (``nuscenes.utils.splits.create_splits_scenes``: ``mini_train``, ``val``, ...);
    None = every scene of the version."""
    scenes: tuple[str, ...] | None = None
    """Only these nuScenes scene names (``scene-0061``), within ``splits``; None = all of them."""
    num_sweeps: int = Field(10, ge=0, le=10)
    """Earlier LiDAR sweeps registered into each key frame (CLIP2Scene picks K of them at training time)."""
    cameras: tuple[str, ...] = Field(NUSCENES_CAMERAS, min_length=1)
    """Camera channels read as frames, in this order."""
    image_height: int = Field(NUSCENES_IMAGE_HW[0], ge=1)
    """Rows of the stored images (900 = no resize)."""
    image_width: int = Field(NUSCENES_IMAGE_HW[1], ge=1)
    """Columns of the stored images (1600 = no resize)."""
    lidarseg: bool = True
    """Read nuScenes-lidarseg point labels where the version has them."""


@dataclass
class _KeyFrame:
    """The records one key frame reads (tokens resolved)."""

    lidar: list[dict]
    """LIDAR_TOP sample_data: the key frame first, then earlier sweeps (newest first)."""
    cameras: list[dict]
    """Camera sample_data in ``config.cameras`` order."""
    lidarseg: dict | None
    """The key frame's lidarseg record, or None."""


class NuScenesDataset(Dataset[NuScenesConfig]):
    """nuScenes key frames with their sweeps and cameras; see the module docstring."""

    name = "nuscenes"

    @cached_property
    def _nusc(self) -> Any:
        """The devkit's database, loaded on first use (so a plan validates without its data)."""
        root, version = Path(self.config.dataroot), self.config.version
        if not root.is_dir():
            raise ValueError(f"nuscenes: dataroot '{root}' is not a folder")
        if not (root / version).is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
            raise ValueError(f"nuscenes: no table folder '{version}' in dataroot '{root}' (found {found})")
        tables = tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted((root / version).glob("*.json"))
        )
        return _load_tables(str(root), version, tables)

    @cached_property
    def _samples(self) -> dict[str, str]:
        """Scene id -> sample token, for the selected scenes."""
        nusc, cfg = self._nusc, self.config
        by_name = {scene["name"]: scene for scene in nusc.scene}
        selected = set(by_name)
        if cfg.splits is not None:
            from nuscenes.utils.splits import create_splits_scenes

            known = create_splits_scenes(verbose=False)
            unknown = [s for s in cfg.splits if s not in known]
            if unknown:
                raise ValueError(f"nuscenes: unknown split(s) {unknown}; known splits: {sorted(known)}")
            selected = {name for split in cfg.splits for name in known[split]} & set(by_name)
            if not selected:
                raise ValueError(f"nuscenes: splits {list(cfg.splits)} have no scene in version '{cfg.version}'")
        if cfg.scenes is not None:
            unknown = [s for s in cfg.scenes if s not in selected]
            if unknown:
                where = f"splits {list(cfg.splits)} of " if cfg.splits is not None else ""
                raise ValueError(f"nuscenes: unknown scene(s) {unknown}: not in {where}version '{cfg.version}'")
            selected = set(cfg.scenes)
        samples = {}
        for name in sorted(selected):
            token, index = by_name[name]["first_sample_token"], 0
            while token:
                samples[f"{name}-{index:03d}"] = token
                token, index = nusc.get("sample", token)["next"], index + 1
        return samples

    def scene_ids(self) -> list[str]:
        return list(self._samples)

    def named_splits(self) -> dict[str, list[str]]:
        """nuScenes' splits (``create_splits_scenes``) as the key frames of this config's scenes in each."""
        from nuscenes.utils.splits import create_splits_scenes

        result = {}
        for split, names in create_splits_scenes(verbose=False).items():
            wanted = set(names)
            ids = [i for i in self._samples if i.rsplit("-", 1)[0] in wanted]
            if ids:
                result[split] = ids
        return result

    def _key_frame(self, scene_id: str) -> _KeyFrame:
        if scene_id not in self._samples:
            raise StageInputError(f"nuscenes: unknown scene '{scene_id}' (expected '<scene name>-<sample index>')")
        nusc, cfg = self._nusc, self.config
        sample = nusc.get("sample", self._samples[scene_id])
        missing = [c for c in (LIDAR_CHANNEL, *cfg.cameras) if c not in sample["data"]]
        if missing:
            raise StageInputError(
                f"scene '{scene_id}': sample {sample['token']} has no sample_data for {missing} "
                f"(it has {sorted(sample['data'])})"
            )
        lidar = [nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])]
        while len(lidar) <= cfg.num_sweeps and lidar[-1]["prev"]:
            lidar.append(nusc.get("sample_data", lidar[-1]["prev"]))
        lidarseg = None
        if cfg.lidarseg and hasattr(nusc, "lidarseg"):
            try:
                lidarseg = nusc.get("lidarseg", lidar[0]["token"])  # its token is the lidar sample_data's
            except KeyError:
                pass  # no labels for this sample (the test split has none)
        return _KeyFrame(lidar, [nusc.get("sample_data", sample["data"][c]) for c in cfg.cameras], lidarseg)

    def _file(self, scene_id: str, relative: str) -> Path:
        path = contained(Path(self.config.dataroot), relative, f"scene '{scene_id}': the nuScenes tables list the file")
        if not path.is_file():
            raise StageInputError(f"scene '{scene_id}': file '{path}' is missing (listed in the nuScenes tables)")
        return path

    def fingerprint(self, scene_id: str) -> str:
        """Hash of the config (but the dataroot), every table record the scene reads (sample_data,
        calibrated_sensor, ego_pose, lidarseg, and the category table when labels are read), and
        the path, size and mtime of every file it reads (nuScenes files are never rewritten in
        place; hashing their contents would read gigabytes)."""
        nusc, key = self._nusc, self._key_frame(scene_id)
        digest = hashlib.sha256(self.config.model_dump_json(exclude={"dataroot"}).encode())
        records: list[Any] = []
        files = []
        for record in key.lidar + key.cameras:
            records += [record, _calibration(nusc, record), nusc.get("ego_pose", record["ego_pose_token"])]
            files.append(record["filename"])
        if key.lidarseg is not None:
            records += [key.lidarseg, sorted((c["name"], c["index"]) for c in nusc.category)]
            files.append(key.lidarseg["filename"])
        digest.update(json.dumps(records, sort_keys=True, default=str).encode())
        for relative in files:
            stat = self._file(scene_id, relative).stat()
            digest.update(f"{relative}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()

    def load(self, scene_id: str) -> SceneSource:
        nusc, cfg, key = self._nusc, self.config, self._key_frame(scene_id)
        key_lidar = key.lidar[0]
        world_from_global = np.linalg.inv(_global_from_sensor(nusc, key_lidar))
        points, sweep, timestamp = [], [], []
        for k, record in enumerate(key.lidar):
            xyz = read_lidar_bin(self._file(scene_id, record["filename"]))[:, :3].astype(np.float64)
            world_from_sweep = world_from_global @ _global_from_sensor(nusc, record)
            points.append(xyz @ world_from_sweep[:3, :3].T + world_from_sweep[:3, 3])
            sweep.append(np.full(len(xyz), k, np.int16))
            timestamp.append(np.full(len(xyz), _seconds(record, key_lidar), np.float32))
        labels = None
        if key.lidarseg is not None:
            path = self._file(scene_id, key.lidarseg["filename"])
            labels = np.full(sum(map(len, points)), IGNORE_LABEL, np.int16)
            labels[: len(points[0])] = lidarseg_to_nuscenes16(
                np.fromfile(path, np.uint8), nusc.lidarseg_name2idx_mapping, path, len(points[0])
            )
        cameras = [
            (
                record["channel"],
                self._file(scene_id, record["filename"]),
                np.asarray(_calibration(nusc, record)["camera_intrinsic"], np.float64),
                world_from_global @ _global_from_sensor(nusc, record),
                _seconds(record, key_lidar),
            )
            for record in key.cameras
        ]
        size = (cfg.image_height, cfg.image_width)

        def read_frame(i: int) -> Frame:
            return camera_frame(*cameras[i], size)

        return SceneSource(
            scene_id=scene_id,
            points=np.concatenate(points).astype(np.float32),
            frame_names=[c[0] for c in cameras],
            read_frame=read_frame,
            class_names=NUSCENES16.classes,
            labels=labels,
            sweep=np.concatenate(sweep),
            timestamp=np.concatenate(timestamp),
        )


@lru_cache(maxsize=2)
def _load_tables(dataroot: str, version: str, tables: tuple) -> Any:
    """The devkit's ``NuScenes`` database, once per process for the same tables (``tables``: their
    names, sizes and mtimes). Every scene task of a flow loads the plan again, and loading
    v1.0-trainval takes about a minute: worker processes keep it."""
    from nuscenes.nuscenes import NuScenes

    try:
        return NuScenes(version=version, dataroot=dataroot, verbose=False)
    except (AssertionError, KeyError, OSError, json.JSONDecodeError) as err:
        raise ValueError(f"nuscenes: the devkit cannot load '{Path(dataroot) / version}': {err!r}") from None


def lidarseg_to_nuscenes16(raw: np.ndarray, name_to_index: dict[str, int], path: Path, num_points: int) -> np.ndarray:
    """(N,) NUSCENES16 labels (ignore -1) of (N,) lidarseg general-class indices, the indices
    resolved by name through the category table (``name_to_index``)."""
    if len(raw) != num_points:
        raise StageInputError(f"lidarseg '{path}': {len(raw)} labels for a key-frame sweep of {num_points} points")
    lookup = np.full(256, IGNORE_LABEL, np.int16)
    for name, index in name_to_index.items():
        if name not in LIDARSEG_TO_NUSCENES16:
            raise StageInputError(f"lidarseg '{path}': category '{name}' is not a nuScenes-lidarseg general class")
        target = LIDARSEG_TO_NUSCENES16[name]
        lookup[index] = IGNORE_LABEL if target is None else NUSCENES16.index(target)
    unknown = np.setdiff1d(np.unique(raw), list(name_to_index.values()))
    if unknown.size:
        raise StageInputError(f"lidarseg '{path}': label values {unknown.tolist()} are not in the category table")
    return lookup[raw]


def read_lidar_bin(path: Path) -> np.ndarray:
    """(N, 5) float32 x, y, z, intensity, ring of a nuScenes ``.pcd.bin`` file."""
    raw = np.fromfile(path, np.float32)
    if raw.size % LIDAR_VALUES_PER_POINT:
        raise StageInputError(
            f"lidar file '{path}': {raw.size} float32 values, expected a multiple of "
            f"{LIDAR_VALUES_PER_POINT} (x, y, z, intensity, ring per point)"
        )
    return raw.reshape(-1, LIDAR_VALUES_PER_POINT)


def camera_frame(
    name: str,
    path: Path,
    intrinsics: np.ndarray,
    cam_to_world: np.ndarray,
    timestamp: float,
    size: tuple[int, int],
) -> Frame:
    """A camera image as a depth-less frame, resized to ``size`` (rows, cols) with its intrinsics."""
    color, color_file = read_color_file(path, "an image file")
    color, intrinsics = resized_color(color, intrinsics, size)
    return Frame(
        name=name,
        color=color,
        color_file=color_file,
        depth=None,
        intrinsics=intrinsics,
        cam_to_world=cam_to_world,
        timestamp=timestamp,
    )


def rigid_from_quaternion(rotation: list[float], translation: list[float]) -> np.ndarray:
    """(4, 4) transform of a nuScenes record: ``rotation`` a quaternion (w, x, y, z), metres."""
    w, x, y, z = np.asarray(rotation, np.float64) / np.linalg.norm(rotation)
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    matrix[:3, 3] = translation
    return matrix


def _calibration(nusc: Any, record: dict) -> dict:
    return nusc.get("calibrated_sensor", record["calibrated_sensor_token"])


def _global_from_sensor(nusc: Any, record: dict) -> np.ndarray:
    """Sensor -> ego (calibrated_sensor) -> global (the ego pose at this sample_data's time)."""
    calibration = _calibration(nusc, record)
    ego = nusc.get("ego_pose", record["ego_pose_token"])
    return rigid_from_quaternion(ego["rotation"], ego["translation"]) @ rigid_from_quaternion(
        calibration["rotation"], calibration["translation"]
    )


def _seconds(record: dict, key: dict) -> float:
    """Time of a sample_data relative to the key-frame lidar, seconds (tables hold microseconds)."""
    return (record["timestamp"] - key["timestamp"]) * 1e-6
