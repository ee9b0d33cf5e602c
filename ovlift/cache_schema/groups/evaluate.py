"""``global/evaluate``: confusion matrices and metrics."""

from __future__ import annotations

from ovlift.cache_schema.specs import ArraySpec, GroupSpec, Scope

PREDICTORS = {"2d": "fused 2D", "3d": "distilled 3D", "ensemble": "2D-3D ensemble"}


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
    },
)
