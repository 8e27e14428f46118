import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segdiff import depth_coding
from segdiff.errors import SegDiffInputError


@given(st.integers(1, 255), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_round_trip_every_class_count(num_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(7, 9)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = depth_coding.NONE_LABEL
    gray = depth_coding.encode(labels, num_classes)
    assert gray.dtype == np.uint8
    assert np.array_equal(gray == 0, labels == depth_coding.NONE_LABEL)
    assert np.array_equal(depth_coding.decode(gray, num_classes), labels)
    decoded = depth_coding.decode(torch.from_numpy(gray).float(), num_classes)
    assert np.array_equal(decoded.numpy(), labels)


@given(st.integers(1, 255))
def test_levels_follow_the_contract(num_classes):
    levels = depth_coding.gray_levels(num_classes)
    expected = [round(255 * (k + 1) / num_classes) for k in range(num_classes)]
    assert levels.tolist() == expected
    assert levels[-1] == 255 and np.all(np.diff(levels.astype(int)) > 0) and levels[0] > 0


@given(st.integers(1, 255), st.floats(0, 255))
def test_decode_snaps_to_the_nearest_level(num_classes, value):
    candidates = np.concatenate([[0], depth_coding.gray_levels(num_classes)]).astype(float)
    label = int(depth_coding.decode(np.array([value]), num_classes)[0])
    chosen = 0.0 if label == depth_coding.NONE_LABEL else candidates[label + 1]
    assert abs(chosen - value) <= np.min(np.abs(candidates - value)) + 1e-4


def test_noisy_gray_within_half_a_step_decodes_exactly():
    num_classes = 7
    levels = depth_coding.gray_levels(num_classes).astype(float)
    noisy = levels + np.array([-17, 17, -10, 5, 17, -17, -17])
    assert depth_coding.decode(noisy, num_classes).tolist() == list(range(7))


@pytest.mark.parametrize("bad", [0, 256, -1])
def test_class_count_outside_1_to_255_is_an_input_error(bad):
    with pytest.raises(SegDiffInputError, match="1 to 255"):
        depth_coding.gray_levels(bad)


def test_labels_outside_the_list_are_an_input_error():
    with pytest.raises(SegDiffInputError, match="0..2"):
        depth_coding.encode(np.array([[0, 3]]), 3)
    assert issubclass(SegDiffInputError, ValueError)


def test_label_maps_widen_past_255_classes():
    assert depth_coding.label_dtype(255) == np.uint8 and depth_coding.label_dtype(256) == np.uint16
    assert depth_coding.none_label(np.uint8) == depth_coding.NONE_LABEL == 255
    assert depth_coding.none_label(np.uint16) == depth_coding.WIDE_NONE_LABEL == 65535


def test_recode_moves_labels_to_a_new_class_list():
    labels = np.array([[0, 1, 2, depth_coding.NONE_LABEL]], dtype=np.uint8)
    # old class 0 -> new 2, old 2 -> new 0, old 1 is not in the new list
    recoded = depth_coding.recode(labels, {0: 2, 2: 0}, 3)
    assert recoded.dtype == np.uint8
    assert recoded.tolist() == [[2, 255, 0, 255]]


def test_recode_to_a_long_list_or_a_given_dtype_uses_its_none():
    labels = np.array([[0, 1, depth_coding.NONE_LABEL]], dtype=np.uint8)
    wide = depth_coding.recode(labels, {0: 299, 1: 7}, 300)
    assert wide.dtype == np.uint16 and wide.tolist() == [[299, 7, 65535]]
    ground_truth = depth_coding.recode(labels, {1: 4}, 5, dtype=np.uint16)
    assert ground_truth.tolist() == [[depth_coding.IGNORE, 4, depth_coding.IGNORE]]
    from_wide = depth_coding.recode(wide, {299: 0}, 2)
    assert from_wide.tolist() == [[0, 255, 255]]


def test_decode_mask_allows_a_few_pixels_off_level_and_refuses_more():
    labels = np.zeros((10, 10), np.uint8)
    labels[:, 5:] = 1
    mask = depth_coding.encode(labels, 3)  # levels 85 and 170
    mask[0, 0] = 90  # one pixel in a hundred: within the tolerance, read as its nearest level
    assert np.array_equal(depth_coding.decode_mask(mask, 3, "m.png"), labels)
    mask[0, 1] = 100
    with pytest.raises(SegDiffInputError, match=r"m\.png: 2 of 100 pixels \(2\.0%\) have gray"):
        depth_coding.decode_mask(mask, 3, "m.png")
    shifted = (depth_coding.encode(labels, 3).astype(int) + 40).astype(np.uint8)
    with pytest.raises(SegDiffInputError, match="100 of 100 pixels"):
        depth_coding.decode_mask(shifted, 3)


def test_decode_mask_of_an_empty_class_list_is_all_none():
    none = depth_coding.decode_mask(np.zeros((2, 3), np.uint8), 0)
    assert np.all(none == depth_coding.NONE_LABEL)
    with pytest.raises(SegDiffInputError, match="0-class list"):
        depth_coding.decode_mask(np.full((2, 3), 255, np.uint8), 0)
