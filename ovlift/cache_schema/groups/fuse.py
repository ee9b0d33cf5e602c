"""``scenes/<scene_id>/fuse``: several teachers' features fused into one set (SAS)."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec

FUSE_SPEC = GroupSpec(
    stage="fuse",
    doc="Per-point features of several teachers fused into one (SAS's capability weighting or a baseline).",
    arrays=(
        ArraySpec("features", "float16", ("N", "C"), (1 << 16, None), "fused feature per point (0 where none)"),
        ArraySpec("seen", "bool", ("N",), (1 << 18,), "whether any fused teacher has a feature at the point"),
        ArraySpec(
            "weights", "float16", ("N", "T"), (1 << 16, None), "weight of each teacher (info.teachers order), 0 unseen"
        ),
        ArraySpec("winner", "int8", ("N",), (1 << 18,), "teacher of the largest weight (lowest on a tie), -1 unseen"),
    ),
    info={
        "teacher": "name of the fused feature set, fused:<teacher>+<teacher>... (what distill and predict name)",
        "teachers": "the fused extract2d teachers, in weight-column order",
        "text_encoder": "text encoder of the teachers' shared space (to embed queries)",
        "classes": "the vocabulary whose classes each teacher's prediction was taken over",
        "method": "capability (SAS), add or linear (SAS Tab. 3 baselines)",
        "capability": "the capability rows used (teachers x classes), or null for add and linear",
        "capability_source": "inline (the config's table), global/capability, or null for add and linear",
    },
)
