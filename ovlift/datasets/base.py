"""What a dataset reader hands to the ``input`` stage: one scene, frames on demand."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ovlift.cache_schema.groups.frames import depth_metres
from ovlift.config import ConfigT, Configurable


@dataclass(frozen=True)
class RawDepth:
    """Depth as a sensor stores it: integers in ``units_per_m``, 0 = no measurement."""

    values: np.ndarray
    """(h, w) uint16."""
    units_per_m: float

    def metres(self) -> np.ndarray:
        """float32 metres, the one conversion (``cache_schema.groups.frames.depth_metres``)."""
        return depth_metres(self.values, self.units_per_m)


@dataclass
class Frame:
    """One posed image. Camera convention: OpenCV (x right, y down, z forward)."""

    name: str
    color: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth: np.ndarray | None
    """(H, W) float32 z-depth in metres, 0 where invalid; None for LiDAR-camera data."""
    intrinsics: np.ndarray
    """(3, 3) pinhole intrinsics in pixels of the colour image."""
    cam_to_world: np.ndarray
    """(4, 4) colour camera-to-world pose in metres; may be non-finite (invalid pose)."""
    labels: np.ndarray | None = None
    """(H, W) int16 ground-truth class per pixel (synthetic data only)."""
    instances: np.ndarray | None = None
    """(H, W) int32 ground-truth instance per pixel (synthetic data only)."""
    timestamp: float | None = None
    """Capture time in seconds relative to the scene's key frame (LiDAR-camera data)."""
    depth_intrinsics: np.ndarray | None = None
    """(3, 3) intrinsics in pixels of the depth image, for sensors whose depth camera differs
    from the colour camera (ScanNet: 640x480 depth, 1296x968 colour). None: the depth image
    is registered to the colour image (same size, same intrinsics)."""
    depth_to_color: np.ndarray | None = None
    """(4, 4) rigid transform from depth-camera to colour-camera coordinates, metres (only with
    ``depth_intrinsics``); None: identity (the two cameras share a centre)."""
    color_file: bytes | None = None
    """The colour image's file (JPEG or PNG) where ``color`` is exactly its decoding
    (``cache_schema.groups.frames.decode_color``), resized to ``color``'s size where that
    differs (``resize_color``): the store keeps the file instead of the pixels. None: no
    such file (synthetic frames)."""
    depth_raw: RawDepth | None = None
    """The depth as the sensor stored it, where ``depth`` is exactly ``depth_raw.metres()``:
    the store keeps these integers instead of float metres. None: float depth only."""


@dataclass
class SceneSource:
    """A scene as a reader found it, before validation."""

    scene_id: str
    points: np.ndarray
    frame_names: list[str]
    read_frame: Callable[[int], Frame]
    """Loads frame i of ``frame_names`` (lazily, so frames stream)."""
    class_names: tuple[str, ...] | None = None
    """The label set that ``labels`` index into."""
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    faces: np.ndarray | None = None
    sweep: np.ndarray | None = None
    """(N,) LiDAR sweep of each point: 0 = the key frame, k = the k-th earlier sweep (registered
    into the key frame's world by the ego poses); None for one cloud (RGB-D reconstructions)."""
    timestamp: np.ndarray | None = None
    """(N,) capture time of each point's sweep, seconds relative to the key frame (<= 0)."""
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)


def scene_folders(dataset: str, roots: Iterable[str | Path], is_scene: Callable[[Path], bool], expected: str):
    """Scene id (folder name) -> folder: each root is a scene folder (``is_scene``) or holds scene
    folders. A root that is not a folder or holds no scene is a FileNotFoundError saying what a
    scene folder holds (``expected``); two scenes of one name are a ValueError naming both."""
    folders: dict[str, Path] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{dataset}: '{root}' is not a folder")
        candidates = [root] if is_scene(root) else sorted(p for p in root.iterdir() if p.is_dir() and is_scene(p))
        if not candidates:
            raise FileNotFoundError(f"{dataset}: no scene in '{root}' or its subfolders (expected {expected})")
        for folder in candidates:
            if folder.name in folders:
                raise ValueError(f"{dataset}: two scenes named '{folder.name}': {folders[folder.name]} and {folder}")
            folders[folder.name] = folder
    return folders


class Dataset(ABC, Configurable[ConfigT]):
    """A reader of one kind of data into canonical scenes: ``class X(Dataset[XConfig])``."""

    name: ClassVar[str]

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abstractmethod
    def scene_ids(self) -> list[str]:
        """Every scene this dataset config provides."""

    @abstractmethod
    def fingerprint(self, scene_id: str) -> str:
        """Changes whenever what ``load(scene_id)`` returns could change."""

    def named_splits(self) -> dict[str, list[str]]:
        """The dataset's own splits (nuScenes' ``train``, ``val``, ...) as scene ids of this
        config, for a plan's ``splits: {train: train}``; none by default."""
        return {}

    @abstractmethod
    def load(self, scene_id: str) -> SceneSource:
        """The scene; frames are read on demand."""


def read_json_key(scene_id: str, path: Path, key: str, expected: str) -> Any:
    """The value under ``key`` of the JSON object in ``path``; an unreadable file, invalid JSON or a
    missing key is an error naming the scene, the file and ``expected`` (what the dataset keeps there)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise FileNotFoundError(f"scene '{scene_id}': cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"scene '{scene_id}': {path} is not JSON ({err}); expected '{key}': {expected}") from None
    if not isinstance(data, dict) or key not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"scene '{scene_id}': {path} has no '{key}' (found {found}); expected '{key}': {expected}")
    return data[key]
