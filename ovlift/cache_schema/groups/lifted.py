"""Per-point teacher features, whichever stage last cleaned them: the one reader of
what ``distill`` distils and ``predict`` labels in 2D."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ovlift.cache_schema.groups.project import fused_features, fused_teacher
from ovlift.cache_schema.store import StageGroup
from ovlift.errors import StageInputError

FeatureSource = Literal["project", "denoise", "fuse"]
"""``project``: the fused features (OpenScene); ``denoise``: after CUS3D's object filter;
``fuse``: several teachers fused into one set (SAS), named by its info ``teacher``."""


@dataclass
class LiftedFeatures:
    features: np.ndarray
    """(N, C) float16 per-point teacher features (0 where none)."""
    seen: np.ndarray
    """(N,) bool: points with a feature."""
    teacher: str
    text_encoder: dict


@dataclass(frozen=True)
class LiftedArrays:
    """Where a scene's lifted features lie, and their info: nothing is read until ``read``."""

    group: StageGroup
    teacher: str
    text_encoder: dict
    fused: str | None = None
    """``project``'s fused teacher whose features these are (read with ``fused_features``, either
    stored form); None: the group's own ``features`` and ``seen`` (``denoise``, ``fuse``)."""

    @property
    def channels(self) -> int:
        """C, from the array's metadata."""
        name = "features" if self.fused is None else f"fused/{self.fused}/features"
        if self.fused is not None and name not in self.group:
            name = f"fused/{self.fused}/distinct"
        return int(self.group.array(name).shape[1])

    def read(self) -> LiftedFeatures:
        features = self.group.load("features") if self.fused is None else fused_features(self.group, self.fused)
        return LiftedFeatures(features, self.read_seen(), self.teacher, self.text_encoder)

    def read_seen(self) -> np.ndarray:
        return self.group.load("seen" if self.fused is None else f"fused/{self.fused}/seen")


def lifted_arrays(
    groups: Mapping[str, StageGroup], source: FeatureSource, teacher: str | None, where: str
) -> LiftedArrays:
    """The features of ``source`` among a scene's input groups (keys ``project``, ``denoise``, ``fuse``),
    found from the groups' info alone."""
    if source not in groups:
        raise StageInputError(f"{where}: feature source '{source}' is not among the inputs {sorted(groups)}")
    if source == "project":
        name = fused_teacher(groups["project"], teacher, where)
        info = groups["project"].info["teachers"][name]
        return LiftedArrays(groups["project"], name, info["text_encoder"], fused=name)
    group = groups[source]
    if teacher is not None and group.info["teacher"] != teacher:
        raise StageInputError(f"{where}: {source} holds teacher '{group.info['teacher']}', not '{teacher}'")
    return LiftedArrays(group, group.info["teacher"], group.info["text_encoder"])


def lifted_features(
    groups: Mapping[str, StageGroup], source: FeatureSource, teacher: str | None, where: str
) -> LiftedFeatures:
    """The features of ``source`` among a scene's input groups, read (``lifted_arrays``)."""
    return lifted_arrays(groups, source, teacher, where).read()


@dataclass
class TrainingScene:
    """What a ``distill`` implementation reads of one training scene."""

    scene_id: str
    points: np.ndarray
    """(N, 3) float32."""
    colors: np.ndarray | None
    """(N, 3) uint8, where the input has colours."""
    sweep: np.ndarray | None
    """(N,) sweep of each point (LiDAR scenes; 0 = key frame)."""
    lifted: LiftedFeatures
    superpoints: np.ndarray | None = None
    """(N,) int64 superpoint of each point, 0..S-1 (a point in none is one of its own)."""


class TrainingScenes:
    """A split's training scenes by index, each read from its groups when indexed: a split's
    features need not fit in memory (ScanNet's 1,201 training scans hold 180-280 GB of them).
    What training needs up front (ids, teacher, text encoder, channels, colours) comes from
    the groups' info and metadata; an error when the split has no scenes."""

    def __init__(
        self,
        scene_inputs: Mapping[str, Mapping[str, StageGroup]],
        source: FeatureSource,
        teacher: str | None,
        superpoints: bool,
        where: str,
        split: str,
    ) -> None:
        self.scene_ids = list(scene_inputs)
        self._groups = list(scene_inputs.values())
        self._lifted = [lifted_arrays(g, source, teacher, f"scene '{s}'") for s, g in scene_inputs.items()]
        self._superpoints = superpoints
        if not self._lifted:
            raise StageInputError(f"{where}: split '{split}' has no scenes to train on")
        self.teacher, self.text_encoder = self._lifted[-1].teacher, self._lifted[-1].text_encoder
        """The last scene's teacher and text encoder (those of every scene, normally)."""

    def __len__(self) -> int:
        return len(self._groups)

    def __getitem__(self, index: int) -> TrainingScene:
        """Scene ``index``'s points and lifted features, with ``segment``'s superpoints when asked."""
        scene_id, groups, lifted = self.scene_ids[index], self._groups[index], self._lifted[index].read()
        points = groups["input"]
        return TrainingScene(
            scene_id,
            points.load("points"),
            points.load("colors") if "colors" in points else None,
            points.load("sweep") if "sweep" in points else None,
            lifted,
            scene_superpoints(groups["segment"], len(lifted.seen), f"scene '{scene_id}'")
            if self._superpoints
            else None,
        )

    @property
    def channels(self) -> int:
        """C of the first scene's features."""
        return self._lifted[0].channels

    def have_colors(self) -> bool:
        return all("colors" in g["input"] for g in self._groups)

    def seen(self, index: int) -> np.ndarray:
        """Scene ``index``'s (N,) points with a feature, read alone."""
        return self._lifted[index].read_seen()


def scene_superpoints(segment: StageGroup, num_points: int, where: str) -> np.ndarray:
    """(N,) int64 superpoints numbered 0..S-1; a point in none (-1) becomes a superpoint of its own."""
    ids = segment.load("superpoints").astype(np.int64)
    if len(ids) != num_points:
        raise StageInputError(f"{where}: array 'superpoints' has {len(ids)} points, the teacher features {num_points}")
    none = ids < 0
    ids[none] = (int(ids.max()) + 1 if len(ids) else 0) + np.arange(int(none.sum()))
    return np.unique(ids, return_inverse=True)[1].astype(np.int64)
