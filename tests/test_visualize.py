"""Class colors, overlays and uncertainty pictures."""

import numpy as np
from PIL import Image

from segdiff.visualize import NONE_COLOR, class_colors, colorize, overlay, uncertainty_image


def test_class_colors_are_distinct_and_stable():
    colors = class_colors(847)
    assert colors.shape == (847, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors[:21]}) == 21
    np.testing.assert_array_equal(class_colors(7), colors[:7])
    assert NONE_COLOR not in {tuple(c) for c in colors}


def test_colorize_draws_none_and_ignore_black():
    colors = class_colors(3)
    rgb = colorize(np.array([[0, 2, 3, 65535]]), 3)
    np.testing.assert_array_equal(rgb[0, :2], colors[[0, 2]])
    assert (rgb[0, 2:] == 0).all()


def test_overlay_adds_a_legend_and_keeps_unlabeled_pixels():
    image = Image.new("RGB", (60, 40), (100, 100, 100))
    labels = np.full((40, 60), 255, dtype=np.uint8)
    labels[5:35, 5:30] = 1
    result = overlay(image, labels, ["sky", "box"])
    assert result.height == 40 and result.width > 60
    pixels = np.asarray(result)
    assert tuple(pixels[38, 58]) == (100, 100, 100)  # none: the image shows through
    assert tuple(pixels[6, 6]) != (100, 100, 100)  # the box is tinted


def test_uncertainty_image_spans_0_to_255():
    picture = np.asarray(uncertainty_image(np.array([[0.0, 0.5, 1.0, 2.0]])))
    assert picture.tolist() == [[0, 128, 255, 255]]
