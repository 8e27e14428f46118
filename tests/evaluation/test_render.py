"""Sample panels and confusion-matrix pictures."""

import numpy as np
from PIL import Image

from segdiff.evaluation.render import confusion_image, sample_panel


def test_sample_panel_has_three_tiles_and_a_legend():
    image = Image.new("RGB", (8, 4), (200, 10, 10))
    gt = np.array([[0, 1, 1, 65535]] * 4).repeat(2, axis=1)
    pred = np.array([[0, 1, 2, 3]] * 4).repeat(2, axis=1)
    panel = sample_panel(image, gt, pred, ("background", "circle", "square"))
    tile_w = 512  # 8x4 scaled to 256 px high
    assert panel.shape[1] == 3 * tile_w + 2 * 4
    assert panel.shape[0] > 18 + 256  # titles + tiles + legend rows
    assert tuple(panel[18 + 10, 5]) == (200, 10, 10)  # the image tile


def test_confusion_image_small_vocabulary_is_labeled_and_row_normalised():
    confusion = np.array([[3, 0], [1, 2], [0, 2]])  # [pred + none, gt]
    picture = confusion_image(confusion, ("background", "circle"))
    array = np.asarray(picture)
    assert array.shape[0] > 2 * 36 and array.shape[1] > 3 * 36  # name margins added
    # Cell edges (away from the numbers): circle row is 50% circle, 50% none; background
    # row 75% background. White->navy shading: 255 - share * (255 - (8, 48, 107)).
    circle_row = {tuple(int(v) for v in p) for p in array[-3]}
    background_row = {tuple(int(v) for v in p) for p in array[-36 - 3]}
    assert (132, 152, 181) in circle_row
    assert (70, 100, 144) in background_row


def test_confusion_image_large_vocabulary_is_one_pixel_a_cell():
    confusion = np.zeros((848, 847), dtype=np.int64)
    confusion[np.arange(847), np.arange(847)] = 5
    picture = confusion_image(confusion, tuple(f"c{k}" for k in range(847)))
    assert picture.size == (848, 847 + 20)
    array = np.asarray(picture)
    assert tuple(array[20 + 3, 3]) == (8, 48, 107)  # diagonal, full share
    assert tuple(array[20 + 3, 5]) == (255, 255, 255)
