"""Metrics against confusion matrices computed by hand (detectron2 convention + none row)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segdiff.depth_coding import IGNORE
from segdiff.evaluation.metrics import compute_metrics, confusion_matrix, prediction_rows

I = IGNORE  # noqa: E741


def test_confusion_matrix_by_hand():
    gt = np.array([[0, 0, 0, 1], [1, 1, 2, I]], dtype=np.uint16)
    pred = np.array([[0, 0, 1, 1], [1, 255, 0, 2]], dtype=np.uint8)
    rows, out_of_range = prediction_rows(pred, 3)
    assert out_of_range == 0
    expected = np.array(
        [
            [2, 0, 1],  # predicted 0: two right, one on a class-2 pixel
            [1, 2, 0],  # predicted 1
            [0, 0, 0],  # predicted 2 only on the ignored pixel: not counted
            [0, 1, 0],  # none on a class-1 pixel
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(rows, gt, 3), expected)

    m = compute_metrics(expected)
    # gt totals 3, 3, 1 (none counts against class 1); pred totals 3, 3, 0; TP 2, 2, 0.
    np.testing.assert_allclose(m.iou, [50.0, 50.0, 0.0])
    np.testing.assert_allclose(m.accuracy, [200 / 3, 200 / 3, 0.0])
    assert m.miou == pytest.approx(100 / 3)
    assert m.pixel_accuracy == pytest.approx(400 / 7)
    assert m.mean_accuracy == pytest.approx(400 / 9)
    assert m.fwiou == pytest.approx(300 / 7)
    np.testing.assert_array_equal(m.gt_pixels, [3, 3, 1])
    np.testing.assert_array_equal(m.pred_pixels, [3, 3, 0])


def test_absent_classes_are_left_out_of_the_means():
    gt = np.array([0, 0, 0, 1, 1], dtype=np.uint16)
    pred = np.array([0, 0, 3, 1, 1], dtype=np.uint8)  # class 3 predicted but never in gt
    m = compute_metrics(confusion_matrix(prediction_rows(pred, 4)[0], gt, 4))
    assert m.iou[0] == pytest.approx(200 / 3)
    assert m.iou[1] == pytest.approx(100.0)
    assert np.isnan(m.iou[2]) and np.isnan(m.iou[3])
    assert np.isnan(m.accuracy[3])
    assert m.pred_pixels[3] == 1
    assert m.miou == pytest.approx((200 / 3 + 100) / 2)
    assert m.pixel_accuracy == pytest.approx(80.0)
    assert m.mean_accuracy == pytest.approx((200 / 3 + 100) / 2)
    assert m.fwiou == pytest.approx(3 / 5 * 200 / 3 + 2 / 5 * 100)


def test_ignored_pixels_never_count_whatever_is_predicted():
    gt = np.array([0, 1, I, I], dtype=np.uint16)
    right = np.array([0, 1, 255, 255], dtype=np.uint8)
    wrong_on_ignore = np.array([0, 1, 1, 0], dtype=np.uint8)
    a = confusion_matrix(prediction_rows(right, 2)[0], gt, 2)
    b = confusion_matrix(prediction_rows(wrong_on_ignore, 2)[0], gt, 2)
    np.testing.assert_array_equal(a, b)
    assert compute_metrics(b).miou == 100.0


def test_none_prediction_is_a_miss_not_a_prediction():
    gt = np.array([0, 0, 1, 1], dtype=np.uint16)
    pred = np.array([0, 255, 1, 1], dtype=np.uint8)
    m = compute_metrics(confusion_matrix(prediction_rows(pred, 2)[0], gt, 2))
    assert m.iou[0] == pytest.approx(50.0)  # TP 1 / (gt 2 + pred 1 - 1)
    assert m.iou[1] == pytest.approx(100.0)  # the none pixel is no false positive of class 1
    assert m.pixel_accuracy == pytest.approx(75.0)


@pytest.mark.parametrize(
    ("labels", "num_classes", "rows", "out_of_range"),
    [
        (np.array([0, 2, 255], dtype=np.uint8), 3, [0, 2, 3], 0),
        (np.array([0, 3, 9, 255], dtype=np.uint8), 3, [0, 3, 3, 3], 2),
        (np.array([1, 65535], dtype=np.uint16), 3, [1, 3], 0),
        (np.array([1, 255], dtype=np.uint16), 3, [1, 3], 1),  # 16-bit none is 65535
        (np.array([255, 299, 300, 65535], dtype=np.uint16), 300, [255, 299, 300, 300], 1),
        (np.array([255, 254], dtype=np.uint8), 300, [300, 254], 0),  # 8-bit: 255 is none
        (np.array([-1, 2], dtype=np.int64), 3, [3, 2], 1),
    ],
)
def test_prediction_rows(labels, num_classes, rows, out_of_range):
    got_rows, got_out = prediction_rows(labels, num_classes)
    np.testing.assert_array_equal(got_rows, rows)
    assert got_out == out_of_range


def test_bad_shapes_and_empty_ground_truth_raise():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.uint16), 2)
    with pytest.raises(ValueError, match="ground truth holds id 5"):
        confusion_matrix(np.zeros(2, np.int64), np.array([0, 5], np.uint16), 2)
    with pytest.raises(ValueError, match="no labeled"):
        compute_metrics(np.zeros((3, 2), np.int64))


@settings(max_examples=60, deadline=None)
@given(
    data=hnp.arrays(np.uint8, (2, 6, 5), elements=st.integers(0, 4)),
)
def test_matches_per_class_set_definition(data):
    """IoU_c = |pred=c and gt=c| / |scored pixels with pred=c or gt=c|, per the definition."""
    num_classes = 3
    pred = np.where(data[0] == 4, 255, data[0])  # 3 = out of range, 255 = none
    gt = np.where(data[1] >= 3, I, data[1].astype(np.uint16))
    if not (gt != I).any():
        return
    rows, _ = prediction_rows(pred, num_classes)
    m = compute_metrics(confusion_matrix(rows, gt, num_classes))
    scored = gt != I
    for c in range(num_classes):
        in_gt = scored & (gt == c)
        if not in_gt.any():
            assert np.isnan(m.iou[c])
            continue
        union = scored & ((pred == c) | (gt == c))
        assert m.iou[c] == pytest.approx(100 * (in_gt & (pred == c)).sum() / union.sum())
    assert m.pixel_accuracy == pytest.approx(100 * (scored & (pred == gt)).sum() / scored.sum())
