"""``scenes/<scene_id>/predict``: per-point predictions."""

from __future__ import annotations

from ovlift.cache_schema.specs import IGNORE_LABEL, ArraySpec, GroupSpec

PREDICT_SPEC = GroupSpec(
    stage="predict",
    doc="Per-point predictions of the distilled student, the fused 2D features and their ensemble.",
    arrays=(
        ArraySpec("features_3d", "float16", ("N", "D"), (1 << 16, None), "the student's per-point features"),
        ArraySpec(
            "similarity_3d", "float16", ("N",), (1 << 18,), "max cosine of the student feature to the vocabulary"
        ),
        ArraySpec("labels_3d", "int16", ("N",), (1 << 18,), "the student's class (index into info.classes)"),
        ArraySpec("similarity_2d", "float16", ("N",), (1 << 18,), "max cosine of the 2D feature; -inf unseen"),
        ArraySpec("labels_2d", "int16", ("N",), (1 << 18,), f"the distilled 2D features' class, {IGNORE_LABEL} unseen"),
        ArraySpec(
            "labels_fused_2d",
            "int16",
            ("N",),
            (1 << 18,),
            f"the fused 2D features' class before cleaning, {IGNORE_LABEL} unseen (when distilled from denoise)",
            required=False,
        ),
        ArraySpec("labels_ensemble", "int16", ("N",), (1 << 18,), "the 2D-3D ensemble's class"),
        ArraySpec("ensemble_from_2d", "bool", ("N",), (1 << 18,), "whether the ensemble took the 2D label"),
    ),
    info={
        "classes": "the vocabulary's classes that labels index",
        "teacher": "the teacher used for 2D",
        "source": "the stage the 2D features came from (project: fused; denoise: CUS3D's filter; fuse: SAS)",
        "text_encoder": "text encoder of the features' space (to embed queries)",
    },
)
