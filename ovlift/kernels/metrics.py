"""Semantic segmentation metrics: one implementation, ScanNet's benchmark rules.

* ground truth with the ignore label, or outside the valid classes, is skipped;
* a prediction outside the valid classes counts as a miss (a false negative of
  the true class, a false positive of nothing): column K of the confusion;
* IoU = tp / (tp + fp + fn), as ScanNet's ``evaluate_semantic_label.py``: a class
  predicted but absent from the ground truth has IoU 0 and counts in the mean;
  only a class neither present nor predicted (tp + fp + fn = 0) has no IoU (NaN)
  and is left out;
* mAcc = mean of per-class recall over the classes present in the ground truth;
  overall accuracy = correct / evaluated points;
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
    """(K,) per-class IoU; NaN where the class is neither in the ground truth nor predicted (or not valid)."""
    accuracy: np.ndarray
    """(K,) per-class recall; NaN where the class is absent from the ground truth (or not valid)."""
    without_ground_truth: np.ndarray
    """(K,) bool: valid classes absent from the ground truth (IoU 0 if predicted, else NaN)."""
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
    counted = (tp + fp + fn > 0) & valid  # present, or predicted though absent (IoU 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(counted, tp / (tp + fp + fn), np.nan)
        acc = np.where(present, tp / gt, np.nan)
    result = Scores(
        iou=iou,
        accuracy=acc,
        without_ground_truth=valid & (gt == 0),
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


def subset_miou(result: Scores, classes: np.ndarray | list[bool]) -> float:
    """Mean IoU over the counted classes among ``classes`` (a mask): ScanNet-200's
    head/common/tail mIoU (its benchmark script averages each split's class IoUs)."""
    return _mean(result.iou[np.asarray(classes, bool)])


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")
