"""Semantic segmentation metrics: one implementation, ScanNet's benchmark rules.

* ground truth with the ignore label, or outside the valid classes, is skipped;
* a prediction outside the valid classes counts as a miss (a false negative of
  the true class, a false positive of nothing): column K of the confusion;
* IoU = tp / (tp + fp + fn); classes absent from the ground truth have no IoU
  (NaN) and are left out of the means, but their false positives still count
  against the classes they were taken from;
* mAcc = mean of per-class recall; overall accuracy = correct / evaluated points;
* hIoU = harmonic mean of the mIoU over seen and over unseen classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore: int = -1, valid: np.ndarray | None = None
) -> np.ndarray:
    """(K, K + 1) int64 counts: rows truth, columns prediction, column K = invalid prediction."""
    valid = np.ones(num_classes, bool) if valid is None else np.asarray(valid, bool)
    truth = np.asarray(truth).astype(np.int64).ravel()
    prediction = np.asarray(prediction).astype(np.int64).ravel()
    keep = (truth != ignore) & (truth >= 0) & (truth < num_classes)
    keep[keep] = valid[truth[keep]]
    t, p = truth[keep], prediction[keep]
    outside = (p < 0) | (p >= num_classes)
    outside[~outside] = ~valid[p[~outside]]
    p = np.where(outside, num_classes, p)
    return np.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1
    )


@dataclass
class Scores:
    iou: np.ndarray
    """(K,) per-class IoU, NaN where the class is absent from the ground truth (or not valid)."""
    accuracy: np.ndarray
    """(K,) per-class recall, NaN likewise."""
    miou: float
    macc: float
    overall_accuracy: float
    seen_miou: float = float("nan")
    unseen_miou: float = float("nan")
    hiou: float = float("nan")


def scores(confusion: np.ndarray, valid: np.ndarray | None = None, unseen: np.ndarray | None = None) -> Scores:
    k = confusion.shape[0]
    valid = np.ones(k, bool) if valid is None else np.asarray(valid, bool)
    tp = np.diag(confusion[:, :k]).astype(np.float64)
    gt = confusion.sum(1).astype(np.float64)  # includes invalid predictions (misses)
    fp = confusion[:, :k].sum(0).astype(np.float64) - tp
    fn = gt - tp
    present = (gt > 0) & valid
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / (tp + fp + fn), np.nan)
        acc = np.where(present, tp / gt, np.nan)
    result = Scores(
        iou=iou,
        accuracy=acc,
        miou=_mean(iou),
        macc=_mean(acc),
        overall_accuracy=float(tp.sum() / gt.sum()) if gt.sum() else float("nan"),
    )
    if unseen is not None and np.asarray(unseen, bool).any():
        unseen = np.asarray(unseen, bool)
        result.seen_miou, result.unseen_miou = _mean(iou[~unseen]), _mean(iou[unseen])
        s, u = result.seen_miou, result.unseen_miou
        result.hiou = 2 * s * u / (s + u) if s + u > 0 else 0.0
    return result


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")
