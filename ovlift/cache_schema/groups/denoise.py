"""``scenes/<scene_id>/denoise``: teacher features after CUS3D's 3D object filter."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec

DENOISE_SPEC = GroupSpec(
    stage="denoise",
    doc="A teacher's per-point features after the object-level vote (CUS3D), with each object's vote.",
    arrays=(
        ArraySpec("features", "float16", ("N", "C"), (1 << 16, None), "denoised feature per point (0 where none)"),
        ArraySpec("seen", "bool", ("N",), (1 << 18,), "whether the point has a feature"),
        ArraySpec("kept_views", "int32", ("N",), (1 << 18,), "views that agreed with the point's object label"),
        ArraySpec(
            "object_label", "int16", ("O",), (None,), "each object's voted class (index into info.classes), -1 none"
        ),
        ArraySpec("object_vote_share", "float32", ("O",), (None,), "share of the object's (point, view) votes it won"),
        ArraySpec("object_votes", "int32", ("O",), (None,), "(point, view) votes cast in the object"),
    ),
    info={
        "teacher": "the extract2d teacher whose views were voted",
        "text_encoder": "text encoder of the features' space (to embed queries)",
        "classes": "the vocabulary whose classes labelled the views",
        "filtered_views": "views dropped for disagreeing with their object (over the scene)",
    },
)
