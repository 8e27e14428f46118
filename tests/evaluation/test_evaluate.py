"""Scoring a prepared split with fake predictors and label sources (no model)."""

import numpy as np
import pytest

from segdiff.data.prepared import open_prepared
from segdiff.errors import SegDiffInputError
from segdiff.evaluation.benchmarks import get_benchmark
from segdiff.evaluation.evaluate import evaluate
from segdiff.evaluation.predictors import from_predictor
from segdiff.vocabularies import get_vocabulary

SHAPES = get_vocabulary("shapes").classes
VOC21 = get_vocabulary("voc21").classes


def shapes_split(make_prepared, count: int = 4):
    """``count`` images of distinct widths (a fake predictor tells them apart by size)."""
    labels = {}
    for i in range(count):
        ids = np.zeros((3, 4 + i), dtype=np.uint8)
        ids[1:, : 2 + i % 3] = 1 + i % 6
        ids[0, -1] = 255
        labels[f"img{i}"] = ids
    return open_prepared(make_prepared("shapes", SHAPES, labels), "val"), labels


def source_from(answers: dict[str, np.ndarray | None]):
    return lambda name: answers[name.removesuffix(".png")]


def test_perfect_predictor_scores_100_and_gets_the_whole_vocabulary(make_prepared):
    prepared, labels = shapes_split(make_prepared)
    by_width = {ids.shape[1]: ids for ids in labels.values()}
    seen_classes = []

    def predict(image, classes):
        seen_classes.append(classes)
        return by_width[image.width]

    result = evaluate(get_benchmark("shapes"), prepared, from_predictor(predict, prepared, SHAPES))
    assert result.metrics.miou == 100.0
    assert result.scored == result.images == 4
    assert all(classes == list(SHAPES) for classes in seen_classes) and len(seen_classes) == 4
    assert result.num_processes == 1


def test_voc20_on_voc21_data_ignores_background_and_drops_it_from_the_classes(make_prepared):
    raw = np.array([[0, 0, 1, 1], [15, 15, 255, 0]], dtype=np.uint8)
    prepared = open_prepared(make_prepared("voc21", VOC21, {"a": raw}), "val")
    given = []

    def predict_voc20(image, classes):
        given.extend(classes)
        # aeroplane on a background pixel, none elsewhere on background: both unscored.
        return np.array([[0, 255, 0, 0], [14, 14, 3, 255]], dtype=np.uint8)

    voc20 = get_benchmark("voc20")
    result = evaluate(voc20, prepared, from_predictor(predict_voc20, prepared, voc20.classes))
    assert "background" not in given and len(given) == 20
    assert result.metrics.miou == 100.0
    assert np.count_nonzero(~np.isnan(result.metrics.iou)) == 2

    # VOC-21 scores background as class 0: the stray aeroplane pixel now costs IoU.
    voc21 = get_benchmark("voc21")
    predicted = np.array([[1, 0, 1, 1], [15, 15, 3, 0]], dtype=np.uint8)
    result = evaluate(voc21, prepared, source_from({"a": predicted}))
    np.testing.assert_allclose(result.metrics.iou[[0, 1, 15]], [200 / 3, 200 / 3, 100])


def test_problems_are_counted_and_the_rest_is_scored(make_prepared):
    prepared, labels = shapes_split(make_prepared)
    out_of_range = labels["img2"].copy()
    out_of_range[2, 0] = 42
    answers = {
        "img0": labels["img0"],
        "img1": None,  # missing
        "img2": out_of_range,
        "img3": labels["img3"][:, :-1],  # wrong size
    }
    result = evaluate(get_benchmark("shapes"), prepared, source_from(answers))
    assert result.scored == 2
    assert result.missing == ["img1.png"]
    assert [name for name, _ in result.failures] == ["img3.png"]
    assert "shape (3, 6)" in result.failures[0][1] and "(3, 7)" in result.failures[0][1]
    assert result.out_of_range == {"img2.png": 1}
    assert result.metrics.pixel_accuracy < 100.0  # the out-of-range pixel is a miss


def test_unreadable_ground_truth_is_a_failure_not_a_crash(make_prepared):
    prepared, labels = shapes_split(make_prepared, count=2)
    prepared.mask_path("img0.png").write_bytes(b"not a png")
    result = evaluate(get_benchmark("shapes"), prepared, source_from(labels))
    assert result.scored == 1
    assert result.failures[0][0] == "img0.png"
    assert "cannot read prepared mask" in result.failures[0][1]


def test_nothing_scored_is_an_input_error(make_prepared):
    prepared, _ = shapes_split(make_prepared, count=2)
    with pytest.raises(SegDiffInputError, match="nothing could be scored.*2 have no prediction"):
        evaluate(get_benchmark("shapes"), prepared, source_from({"img0": None, "img1": None}))


def test_only_ignored_ground_truth_is_an_input_error(make_prepared):
    prepared = open_prepared(
        make_prepared("shapes", SHAPES, {"a": np.full((2, 2), 255, np.uint8)}), "val"
    )
    answers = {"a": np.zeros((2, 2), np.uint8)}
    with pytest.raises(SegDiffInputError, match="no labeled pixel"):
        evaluate(get_benchmark("shapes"), prepared, source_from(answers))


def test_limit_and_samples(make_prepared):
    prepared, labels = shapes_split(make_prepared, count=5)
    result = evaluate(get_benchmark("shapes"), prepared, source_from(labels), limit=3)
    assert result.images == result.scored == 3
    assert [name for name, _ in result.samples] == ["img0.png", "img1.png", "img2.png"]
    few = evaluate(get_benchmark("shapes"), prepared, source_from(labels), max_samples=2)
    assert len(few.samples) == 2
    assert few.samples[0][1].ndim == 3 and few.samples[0][1].dtype == np.uint8


def test_wrong_vocabulary_fails_before_any_prediction(make_prepared):
    prepared, _ = shapes_split(make_prepared, count=1)

    def never(name):
        raise AssertionError("no prediction should be asked for")

    with pytest.raises(SegDiffInputError, match="voc20 or voc21"):
        evaluate(get_benchmark("voc20"), prepared, never)
