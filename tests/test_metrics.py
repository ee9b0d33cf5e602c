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


def test_class_absent_from_ground_truth_has_no_iou_but_its_false_positives_count():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 3, 0, 1, 1, 1])  # class 3 never true, predicted once
    s = scores(confusion_matrix(truth, pred, 4))
    assert np.isnan(s.iou[3]) and np.isnan(s.accuracy[3])
    np.testing.assert_allclose(s.iou[:3], [2 / 3, 2 / 3, 0])  # class 0 lost a point to class 3
    assert s.miou == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)  # the mean leaves class 3 out


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
