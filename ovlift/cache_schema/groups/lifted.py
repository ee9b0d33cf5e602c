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


def lifted_features(
    groups: Mapping[str, StageGroup], source: FeatureSource, teacher: str | None, where: str
) -> LiftedFeatures:
    """The features of ``source`` among a scene's input groups (keys ``project``, ``denoise``, ``fuse``)."""
    if source not in groups:
        raise StageInputError(f"{where}: feature source '{source}' is not among the inputs {sorted(groups)}")
    if source == "project":
        name = fused_teacher(groups["project"], teacher, where)
        info = groups["project"].info["teachers"][name]
        project = groups["project"]
        return LiftedFeatures(
            fused_features(project, name), project.load(f"fused/{name}/seen"), name, info["text_encoder"]
        )
    group = groups[source]
    if teacher is not None and group.info["teacher"] != teacher:
        raise StageInputError(f"{where}: {source} holds teacher '{group.info['teacher']}', not '{teacher}'")
    return LiftedFeatures(group.load("features"), group.load("seen"), group.info["teacher"], group.info["text_encoder"])


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


def training_scenes(
    scene_inputs: Mapping[str, Mapping[str, StageGroup]],
    source: FeatureSource,
    teacher: str | None,
    superpoints: bool,
    where: str,
    split: str,
) -> list[TrainingScene]:
    """Every training scene's points and lifted features, in ``scene_inputs``' order, with
    ``segment``'s superpoints when asked; an error when the split has none."""
    scenes = []
    for scene_id, groups in scene_inputs.items():
        lifted = lifted_features(groups, source, teacher, f"scene '{scene_id}'")
        points = groups["input"]
        scenes.append(
            TrainingScene(
                scene_id,
                points.load("points"),
                points.load("colors") if "colors" in points else None,
                points.load("sweep") if "sweep" in points else None,
                lifted,
                scene_superpoints(groups["segment"], len(lifted.seen), f"scene '{scene_id}'") if superpoints else None,
            )
        )
    if not scenes:
        raise StageInputError(f"{where}: split '{split}' has no scenes to train on")
    return scenes


def scene_superpoints(segment: StageGroup, num_points: int, where: str) -> np.ndarray:
    """(N,) int64 superpoints numbered 0..S-1; a point in none (-1) becomes a superpoint of its own."""
    ids = segment.load("superpoints").astype(np.int64)
    if len(ids) != num_points:
        raise StageInputError(f"{where}: array 'superpoints' has {len(ids)} points, the teacher features {num_points}")
    none = ids < 0
    ids[none] = (int(ids.max()) + 1 if len(ids) else 0) + np.arange(int(none.sum()))
    return np.unique(ids, return_inverse=True)[1].astype(np.int64)
