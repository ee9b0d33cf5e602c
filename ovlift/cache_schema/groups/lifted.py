"""Per-point teacher features, whichever stage last cleaned them: the one reader of
what ``distill`` distils and ``predict`` labels in 2D."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ovlift.cache_schema.groups.project import fused_teacher
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
            project.load(f"fused/{name}/features"), project.load(f"fused/{name}/seen"), name, info["text_encoder"]
        )
    group = groups[source]
    if teacher is not None and group.info["teacher"] != teacher:
        raise StageInputError(f"{where}: {source} holds teacher '{group.info['teacher']}', not '{teacher}'")
    return LiftedFeatures(group.load("features"), group.load("seen"), group.info["teacher"], group.info["text_encoder"])
