"""``scenes/<scene_id>/project``: visible correspondences and fused teacher features."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec
from ovlift.cache_schema.store import StageGroup
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
            "a teacher's features reduced over the views of each point (0 where unseen)",
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
