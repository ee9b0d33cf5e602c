"""The metric code against confusion matrices computed by hand."""

import numpy as np
import pytest

from ovlift.kernels.metrics import confusion_matrix, scores


def test_hand_computed_example_with_ignore_label():
    truth = np.array([0, 0, 0, 1, 1, 2, -1, -1])
    pred = np.array([0, 1, 0, 1, 1, 1, 2, 0])
    conf = confusion_matrix(truth, pred, 3)
    np.testing.assert_array_equal(conf, [[2, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0]])  # ignored points absent
    s = scores(conf)
    # tp (2, 2, 0), fp (0, 2, 0), fn (1, 0, 1)
    np.testing.assert_allclose(s.iou, [2 / 3, 2 / 4, 0 / 1])
    np.testing.assert_allclose(s.accuracy, [2 / 3, 1, 0])
    assert s.miou == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert s.macc == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert s.overall_accuracy == pytest.approx(4 / 6)


def test_a_class_predicted_but_absent_from_the_ground_truth_has_iou_zero_and_counts():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 3, 0, 1, 1, 1])  # class 3 never true, predicted once; class 4 neither
    s = scores(confusion_matrix(truth, pred, 5))
    assert s.iou[3] == 0 and np.isnan(s.accuracy[3])  # ScanNet: IoU 0; recall undefined
    assert np.isnan(s.iou[4]) and s.without_ground_truth.tolist() == [False, False, False, True, True]
    np.testing.assert_allclose(s.iou[:3], [2 / 3, 2 / 3, 0])  # class 0 lost a point to class 3
    assert s.miou == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)  # class 3 counts, class 4 does not
    assert s.macc == pytest.approx((2 / 3 + 1 + 0) / 3)


def scannet_miou(truth: np.ndarray, pred: np.ndarray, valid_ids: list[int]) -> float:
    """ScanNet's evaluate_semantic_label.py, written out plainly: confusion over the
    valid ids (ground truth outside them skipped, predictions outside them counted as
    an unknown id), get_iou per class (NaN when tp + fp + fn = 0), mean of the rest."""
    unknown = max(valid_ids) + 1
    confusion = np.zeros((unknown + 1, unknown + 1), np.int64)
    for g, p in zip(truth.tolist(), pred.tolist()):
        if g not in valid_ids:
            continue
        confusion[g][p if p in valid_ids else unknown] += 1
    ious = []
    for label in valid_ids:
        tp = confusion[label, label]
        fn = confusion[label, :].sum() - tp
        fp = confusion[[v for v in valid_ids if v != label], label].sum()
        if tp + fp + fn > 0:
            ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious))


@pytest.mark.parametrize("seed", range(5))
def test_miou_equals_an_independent_implementation_of_scannets_rule(seed):
    rng = np.random.default_rng(seed)
    k = 8
    truth = rng.choice([-1, 0, 1, 2, 4, 6], size=400)  # classes 3, 5, 7 never true
    pred = np.where(rng.random(400) < 0.6, truth, rng.integers(-1, k + 2, 400))  # some outside 0..k-1
    valid = np.ones(k, bool)
    valid[6] = False  # not evaluated: its ground truth skipped, predicting it is a miss
    valid_ids = [c for c in range(k) if valid[c]]
    ours = scores(confusion_matrix(truth, pred, k, valid=valid), valid).miou
    assert ours == pytest.approx(scannet_miou(truth, pred, valid_ids))


def test_valid_subset_skips_ground_truth_and_counts_invalid_predictions_as_misses():
    truth = np.array([0, 0, 1, 2, 2, 1])
    pred = np.array([0, 2, 1, 2, 0, 1])
    valid = np.array([True, True, False])  # ScanNet-style: class 2 is not evaluated
    conf = confusion_matrix(truth, pred, 3, valid=valid)
    # rows of class 2 skipped; truth 0 predicted 2 goes to the extra column (a miss)
    np.testing.assert_array_equal(conf, [[1, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0]])
    s = scores(conf, valid)
    np.testing.assert_allclose(s.iou[:2], [1 / 2, 1])  # class 0: tp 1, fn 1 (the miss), fp 0
    assert np.isnan(s.iou[2])
    assert s.overall_accuracy == pytest.approx(3 / 4)


def test_hiou_is_the_harmonic_mean_of_seen_and_unseen_miou():
    conf = confusion_matrix(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 0, 2, 1]), 3)
    s = scores(conf, unseen=np.array([False, True, False]))
    seen = np.mean([s.iou[0], s.iou[2]])
    assert s.seen_miou == pytest.approx(seen) and s.unseen_miou == pytest.approx(s.iou[1])
    assert s.hiou == pytest.approx(2 * seen * s.iou[1] / (seen + s.iou[1]))


def test_a_misspelt_class_in_unseen_or_valid_classes_is_an_error():
    from ovlift.errors import StageInputError
    from ovlift.stages.evaluate import class_mask

    classes = ["wall", "chair", "sofa"]
    assert class_mask(("chair",), classes, "unseen_classes").tolist() == [False, True, False]
    with pytest.raises(StageInputError, match=r"unseen_classes \['chiar'\] are not in the vocabulary"):
        class_mask(("chiar",), classes, "unseen_classes")


def test_scannet200_reports_head_common_and_tail_miou():
    from ovlift.stages.evaluate import markdown_table, scores_json
    from ovlift.vocabularies import SCANNET20, SCANNET200, class_splits

    classes = list(SCANNET200.classes)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 200, 20_000)
    pred = np.where(rng.random(20_000) < 0.6, truth, rng.integers(0, 200, 20_000))
    s = scores(confusion_matrix(truth, pred, 200))
    out = scores_json(s, classes, class_splits(classes))
    for split, members in SCANNET200.splits:
        expected = np.nanmean([s.iou[classes.index(c)] for c in members])
        assert out["split_miou"][split] == pytest.approx(expected, abs=1e-6)
    assert class_splits(list(SCANNET20.classes)) == {} and "split_miou" not in scores_json(s, classes)
    table = markdown_table({"fused": out}, classes, [], (), {"fused": "2D fused"})
    assert "| predictor | head mIoU | common mIoU | tail mIoU |" in table
