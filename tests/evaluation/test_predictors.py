"""Label sources: a folder of label PNGs, and a predictor called per image."""

import numpy as np
import pytest
from PIL import Image

from segdiff.data.prepared import open_prepared
from segdiff.errors import SegDiffInputError
from segdiff.evaluation.predictors import from_directory, from_predictor, read_label_png
from segdiff.vocabularies import get_vocabulary


def test_reads_8_bit_16_bit_and_palette_pngs(tmp_path):
    eight = np.array([[0, 6, 255]], dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "a.png")
    sixteen = np.array([[0, 846, 65535]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "b.png")
    palette = Image.fromarray(eight, mode="L").convert("P")
    palette.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    palette.save(tmp_path / "c.png")

    a, b, c = (read_label_png(tmp_path / f"{n}.png") for n in "abc")
    assert a.dtype == np.uint8 and b.dtype == np.uint16
    np.testing.assert_array_equal(a, eight)
    np.testing.assert_array_equal(b, sixteen)
    np.testing.assert_array_equal(c, eight)  # palette indices, not colors


def test_color_and_corrupt_predictions_are_input_errors(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SegDiffInputError, match="RGB image; predictions are single-channel"):
        read_label_png(tmp_path / "rgb.png")
    with pytest.raises(SegDiffInputError, match="cannot read prediction .*broken.png"):
        read_label_png(tmp_path / "broken.png")


def test_directory_source_finds_predictions_by_image_stem(tmp_path):
    Image.fromarray(np.ones((2, 2), np.uint8)).save(tmp_path / "2008_000001.png")
    labels = from_directory(tmp_path, get_vocabulary("voc21"))
    np.testing.assert_array_equal(labels("2008_000001.jpg"), np.ones((2, 2)))
    assert labels("2008_000002.jpg") is None
    with pytest.raises(SegDiffInputError, match="predictions folder not found"):
        from_directory(tmp_path / "nope", get_vocabulary("voc21"))


def test_predictor_source_gives_the_rgb_image_and_all_classes(make_prepared):
    root = make_prepared("shapes", ("background", "circle"), {"a": np.zeros((3, 5), np.uint8)})
    prepared = open_prepared(root, "val")
    calls = []

    def predict(image, classes):
        calls.append((image.mode, image.size, classes))
        return [[0] * 5] * 3

    labels = from_predictor(predict, prepared, ("background", "circle"))
    assert labels("a.png").shape == (3, 5)
    assert calls == [("RGB", (5, 3), ["background", "circle"])]
