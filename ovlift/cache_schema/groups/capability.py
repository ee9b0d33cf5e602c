"""``global/capability``: how well each 2D teacher recognises each class (SAS)."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec, Scope

CAPABILITY_SPEC = GroupSpec(
    stage="capability",
    scope=Scope.GLOBAL,
    doc="Per teacher and class, the IoU of the teacher's mask of the class with a generator's pseudo mask.",
    arrays=(
        ArraySpec("capability", "float32", ("T", "K"), (None, None), "capability in [0, 1] per teacher and class"),
        ArraySpec("image_count", "int32", ("K",), (None,), "images scored per class (0: no image, capability 0)"),
        ArraySpec(
            "per_image_iou",
            "float32",
            ("T", "K", "M"),
            (None, None, None),
            "IoU per teacher, class and image (NaN where neither mask has a pixel)",
        ),
    ),
    info={
        "teachers": "extract2d variants, in the row order of capability",
        "classes": "the vocabulary's classes, in the column order",
        "vocabulary": "the vocabulary's name",
        "text_encoder": "the text space every teacher and the class embeddings share",
        "generator": "the image generator (render, diffusion-sam)",
        "iou": "mean (per-image IoU averaged, the paper) or pooled (the released code)",
        "templates": "prompt templates of the class embeddings that labelled the teachers' pixels",
        "contact_sheets": "folder of one PNG per class: image, masks, SAM points, each teacher's mask",
    },
)
