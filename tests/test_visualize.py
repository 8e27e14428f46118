"""Class colors, overlays and uncertainty pictures."""

import itertools

import numpy as np
import pytest
from PIL import Image

from segdiff import visualize
from segdiff.visualize import (
    NONE_COLOR,
    class_colors,
    colorize,
    overlay,
    place_names,
    text_size,
    uncertainty_image,
    uncertainty_view,
)


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
    scale = visualize.display_scale(40, 60)  # a small image's picture is enlarged
    assert scale == 10 and result.height == 400 and result.width > 600
    pixels = np.asarray(result)
    assert tuple(pixels[38 * scale, 58 * scale]) == (100, 100, 100)  # none: the image shows
    assert tuple(pixels[6 * scale, 6 * scale]) != (100, 100, 100)  # the box is tinted


def _crowded_labels(height, width):
    """Stripes and blocks touching the border and each other, as on a small example."""
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[:, : width // 3] = 1
    labels[: height // 2, width // 3 :] = 2
    labels[height // 2 :, 2 * width // 3 :] = 3
    labels[height // 4 : height // 4 + max(2, height // 12), :] = 4  # a thin band
    return labels


@pytest.mark.parametrize("size", [(24, 40), (96, 96), (480, 640), (2000, 3000)])
def test_names_lie_inside_their_regions_and_never_overlap(size):
    classes = ["background", "chest of drawers", "window", "television receiver", "shelf"]
    labels = _crowded_labels(*size)
    big = np.kron(labels, np.ones((visualize.display_scale(*size),) * 2, dtype=np.uint8))
    placed = place_names(big, classes, text_size(*big.shape))
    assert placed, "no region was named"
    boxes = []
    for (x, y), name, name_size in placed:
        assert name_size >= max(visualize.MIN_NAME_TEXT, text_size(*big.shape) // 2)
        left, top, right, bottom = visualize._font(name_size).getbbox(
            name, anchor="mm", stroke_width=visualize._stroke(name_size)
        )
        box = (x + left, y + top, x + right, y + bottom)
        assert min(box[0], box[1]) >= 0 and box[2] < big.shape[1] and box[3] < big.shape[0]
        region = big[box[1] : box[3] + 1, box[0] : box[2] + 1]
        assert (region == classes.index(name)).all(), f"{name} leaves its region at {size}"
        boxes.append(box)
    for a, b in itertools.combinations(boxes, 2):
        assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_text_and_legend_scale_with_the_picture():
    assert text_size(96, 96) == visualize.MIN_TEXT
    assert text_size(4000, 6000) == round(4000 / 24)
    small = overlay(Image.new("RGB", (64, 48)), np.zeros((48, 64), np.uint8), ["wall"])
    large = overlay(Image.new("RGB", (3000, 2000)), np.zeros((2000, 3000), np.uint8), ["wall"])
    legend_small, legend_large = small.width - 64 * 8, large.width - 3000
    assert legend_large > 4 * legend_small  # a legend, not a corner stamp
    swatch = np.asarray(large)[:, 3000:]
    red = np.all(swatch == class_colors(1)[0], axis=-1)
    assert red.any(axis=1).sum() >= text_size(2000, 3000) - 2  # text-sized, inside its outline


def test_a_long_legend_wraps_into_columns():
    classes = [f"class {k}" for k in range(60)]
    labels = np.arange(60, dtype=np.uint8).repeat(8).reshape(1, -1).repeat(400, axis=0)
    picture = overlay(Image.new("RGB", (480, 400)), labels, classes)
    assert picture.height == 400 and picture.width > 480 + 2 * 100


def test_uncertainty_image_spans_0_to_255():
    picture = np.asarray(uncertainty_image(np.array([[0.0, 0.5, 1.0, 2.0]])))
    assert picture.tolist() == [[0, 128, 255, 255]]


def test_uncertainty_view_is_a_color_map_with_a_scale():
    uncertainty = np.zeros((50, 80), np.float32)
    uncertainty[:, 40:] = 0.8
    view = np.asarray(uncertainty_view(Image.new("RGB", (80, 50), "gray"), uncertainty))
    scale = visualize.display_scale(50, 80)
    calm, unsure = view[25 * scale, 10 * scale], view[25 * scale, 70 * scale]
    assert unsure.astype(int).sum() > calm.astype(int).sum() + 200  # bright where unsure
    assert len(set(unsure.tolist())) > 1  # colored, not gray
    assert view.shape[1] > 80 * scale  # the color bar
