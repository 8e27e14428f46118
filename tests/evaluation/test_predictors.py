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


def test_batched_and_unbatched_evaluation_give_the_same_labels(tiny_model_dir, make_prepared):
    """A model's source segments several images per pipeline call (their members share UNet
    calls) while the next ones load; each image keeps its own seeded generator, so the
    labels, and the scores, are those of one image at a time. One image cannot be read: it
    fails alone."""
    from segdiff.evaluation.benchmarks import get_benchmark
    from segdiff.evaluation.evaluate import evaluate
    from segdiff.evaluation.predictors import BatchedLabels, load_model_predictor

    rng = np.random.default_rng(1)
    labels = {f"im{i}": rng.integers(0, 4, (12 + 4 * (i % 2), 20)) for i in range(5)}
    prepared = open_prepared(
        make_prepared("shapes", get_vocabulary("shapes").classes, labels), "val"
    )
    prepared.image_path("im3.png").write_bytes(b"not a picture")
    benchmark = get_benchmark("shapes")
    results = {}
    for per_call in (1, 3):
        predict, _ = load_model_predictor(
            str(tiny_model_dir), "cpu", seed=5, ensemble_size=2, images_per_call=per_call
        )
        source = from_predictor(predict, prepared, benchmark.classes)
        assert isinstance(source, BatchedLabels)
        names = [f"im{i}.png" for i in range(5)]
        results[per_call] = dict(source.in_order(names))
        scores = evaluate(benchmark, prepared, source, max_samples=0, progress=False)
        results[per_call]["confusion"] = scores.confusion
        assert scores.images_per_second > 0 and [n for n, _ in scores.failures] == ["im3.png"]
    assert isinstance(results[1]["im3.png"], SegDiffInputError)
    for name, expected in results[1].items():
        if not isinstance(expected, SegDiffInputError):
            assert np.array_equal(expected, results[3][name]), name
