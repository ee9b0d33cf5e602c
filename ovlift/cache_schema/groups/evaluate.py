"""``global/evaluate``: confusion matrices and metrics."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec, Scope

PREDICTORS = {
    "fused_2d": "fused 2D",
    "2d": "2D teacher",
    "3d": "distilled 3D",
    "ensemble": "2D-3D ensemble",
}
"""Predictor key (``predict``'s ``labels_<key>``) -> name in reports. ``2d`` is what the
student distilled (named by ``predictor_names``); ``fused_2d`` exists only when that
was cleaned features (``denoise``): the fused features before cleaning."""
SOURCE_NAMES = {"project": "fused 2D", "denoise": "denoised 2D", "fuse": "multi-teacher fused 2D"}


def predictor_names(source: str) -> dict[str, str]:
    """PREDICTORS with ``2d`` named after the stage its features came from."""
    return {**PREDICTORS, "2d": SOURCE_NAMES.get(source, f"2D ({source})")}


OPTIONAL_PREDICTORS = ("fused_2d",)


EVALUATE_SPEC = GroupSpec(
    stage="evaluate",
    scope=Scope.GLOBAL,
    doc="Confusion matrices and metrics of each predictor over the evaluated scenes.",
    arrays=tuple(
        ArraySpec(
            f"confusion_{p}",
            "int64",
            ("K", "K1"),
            (None, None),
            f"{name}: rows truth, columns prediction, last column predictions outside the valid classes",
            required=p not in OPTIONAL_PREDICTORS,
        )
        for p, name in PREDICTORS.items()
    ),
    info={
        "classes": "class names of the rows",
        "metrics": "predictor -> mIoU, mAcc, overall accuracy, per-class IoU, seen/unseen mIoU and hIoU",
        "scenes": "evaluated scenes",
        "report": "folder with report.json, metrics.md and confusion_<predictor>.png",
        "rule": "the metric's rule in words (ScanNet's: predicted-but-absent classes have IoU 0)",
        "classes_without_ground_truth": "valid classes absent from the evaluated scenes' ground truth",
        "source": "the stage the 2D predictor's features came from (project: fused; denoise: CUS3D; fuse: SAS)",
    },
)
