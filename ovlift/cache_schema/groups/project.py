"""``scenes/<scene_id>/project``: visible correspondences and fused teacher features."""

from __future__ import annotations

import numpy as np

from ovlift.cache_schema.specs import ArraySpec, GroupSpec
from ovlift.cache_schema.store import GroupWriter, StageGroup
from ovlift.errors import StageInputError

CORR_CHUNK = 1 << 20


PROJECT_SPEC = GroupSpec(
    stage="project",
    doc="Visible point-frame-pixel correspondences (occlusion-tested), sorted by point.",
    arrays=(
        ArraySpec("point_index", "int32", ("M",), (CORR_CHUNK,), "point of each correspondence (ascending)"),
        ArraySpec(
            "frame_index", "int32", ("M",), (CORR_CHUNK,), "frame (index into input frames), ascending per point"
        ),
        ArraySpec("pixel", "int16", ("M", 2), (CORR_CHUNK, None), "(row, col) at info.feature_size"),
        ArraySpec("view_count", "int32", ("N",), (1 << 18,), "number of frames that see each point"),
        ArraySpec(
            "fused/{teacher}/features",
            "float16",
            ("N", "C_{teacher}"),
            (1 << 16, None),
            "a teacher's features reduced over the views of each point (0 where unseen); absent in the "
            "deduplicated form",
            required=False,
        ),
        ArraySpec(
            "fused/{teacher}/distinct",
            "float16",
            ("D_{teacher}", "C_{teacher}"),
            (1 << 16, None),
            "deduplicated form: the distinct rows of the fused features",
            required=False,
        ),
        ArraySpec(
            "fused/{teacher}/row",
            "int32",
            ("N",),
            (1 << 18,),
            "deduplicated form: each point's row of distinct",
            required=False,
        ),
        ArraySpec(
            "fused/{teacher}/seen",
            "bool",
            ("N",),
            (1 << 18,),
            "whether any view with that teacher's features sees the point",
            required=False,
        ),
    ),
    info={
        "feature_size": "[rows, cols] of the image grid that pixel indexes",
        "frames": "input frame indices that were projected (after frame_stride, valid poses only)",
        "teachers": "teacher -> {channels, text_encoder} of each fused teacher",
        "imported": "teacher -> the files its features were imported from (implementation 'released'; no views)",
    },
)


def fused_teacher(project: StageGroup, wanted: str | None, where: str) -> str:
    """The fused teacher to read from a ``project`` group: ``wanted``, or its only one."""
    teachers = project.info.get("teachers", {})
    if not teachers:
        raise StageInputError(f"{where}: the project group fused no teacher features")
    if wanted is None:
        if len(teachers) > 1:
            raise StageInputError(f"{where}: project fused several teachers {sorted(teachers)}; choose one")
        return next(iter(teachers))
    if wanted not in teachers:
        raise StageInputError(f"{where}: no fused teacher '{wanted}'; project fused {sorted(teachers)}")
    return wanted


DEDUPLICATE_BELOW = 0.5
"""Fused features are stored deduplicated when their distinct rows number under this fraction of the points."""


def write_fused(out: GroupWriter, teacher: str, features: np.ndarray, seen: np.ndarray) -> None:
    """A teacher's (N, C) float16 fused features and (N,) seen mask, deduplicated where that halves them.

    LiDAR points of many sweeps project to the same few pixels of a key frame's cameras (nuScenes:
    385k points of 10 sweeps onto 6 x 56 x 100 feature pixels), so most fused rows repeat. The
    distinct rows (compared byte for byte: lossless) and each point's row then replace the (N, C)
    array; ``fused_features`` reads either form. Dense RGB-D scenes, whose points each see a mix
    of many views, stay as they are.
    """
    rows = np.ascontiguousarray(features).view(np.dtype((np.void, features.shape[1] * features.itemsize)))
    unique, row = np.unique(rows.reshape(-1), return_inverse=True)  # bytes, not floats: -0.0 stays -0.0
    if len(unique) < DEDUPLICATE_BELOW * len(features):
        distinct = unique.view(features.dtype).reshape(len(unique), features.shape[1])
        out.write(f"fused/{teacher}/distinct", distinct)
        out.write(f"fused/{teacher}/row", row.reshape(-1).astype(np.int32))
    else:
        out.write(f"fused/{teacher}/features", features)
    out.write(f"fused/{teacher}/seen", seen)


def fused_features(project: StageGroup, teacher: str) -> np.ndarray:
    """(N, C) float16: a teacher's fused features in either stored form (see ``write_fused``)."""
    if f"fused/{teacher}/features" in project:
        return project.load(f"fused/{teacher}/features")
    return project.load(f"fused/{teacher}/distinct")[project.load(f"fused/{teacher}/row")]
