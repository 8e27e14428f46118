"""Benchmark rules: vocabularies, VOC-20 vs VOC-21 background, which data serves which."""

import numpy as np
import pytest

from segdiff.data.prepared import open_prepared
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.evaluation.benchmarks import BENCHMARK_NAMES, get_benchmark
from segdiff.vocabularies import get_vocabulary


def test_every_benchmark_scores_its_own_val_split():
    for name in BENCHMARK_NAMES:
        bench = get_benchmark(name)
        assert bench.split == "val"
        assert bench.sources[0] == name
        lut = bench.label_lut(get_vocabulary(name).classes)
        n = len(bench.classes)
        np.testing.assert_array_equal(lut[:n], np.arange(n))
        assert lut[IGNORE] == IGNORE


def test_unknown_benchmark_names_the_known_ones():
    with pytest.raises(SegDiffInputError, match="unknown benchmark 'voc'.*voc20, voc21"):
        get_benchmark("voc")


def test_voc20_has_no_background_and_voc21_has_it_first():
    assert "background" not in get_benchmark("voc20").classes
    assert len(get_benchmark("voc20").classes) == 20
    assert get_benchmark("voc21").classes[0] == "background"
    assert get_benchmark("voc21").classes[1:] == get_benchmark("voc20").classes


def test_voc20_on_voc21_data_ignores_background():
    lut = get_benchmark("voc20").label_lut(get_vocabulary("voc21").classes)
    assert lut[0] == IGNORE  # background
    assert lut[1] == 0  # aeroplane
    assert lut[20] == 19  # tvmonitor
    assert lut[IGNORE] == IGNORE  # the boundary band stays ignored


def test_data_that_cannot_serve_the_benchmark_is_an_error():
    with pytest.raises(SegDiffInputError, match="voc21 needs data prepared with .* voc21"):
        get_benchmark("voc21").label_lut(get_vocabulary("voc20").classes)
    with pytest.raises(SegDiffInputError, match="voc20 or voc21"):
        get_benchmark("voc20").label_lut(get_vocabulary("pc59").classes)
    with pytest.raises(SegDiffInputError, match="shapes"):
        get_benchmark("shapes").label_lut(("background", "circle"))


def test_ground_truth_from_a_prepared_voc21_split(make_prepared):
    voc21 = get_vocabulary("voc21").classes
    raw = np.array([[0, 0, 1, 1], [15, 15, 255, 0]], dtype=np.uint8)
    prepared = open_prepared(make_prepared("voc21", voc21, {"a": raw}), "val")
    voc20 = get_benchmark("voc20")
    gt20 = voc20.ground_truth(prepared, voc20.label_lut(prepared.vocabulary), "a.png")
    np.testing.assert_array_equal(gt20, [[IGNORE, IGNORE, 0, 0], [14, 14, IGNORE, IGNORE]])
    voc21_bench = get_benchmark("voc21")
    gt21 = voc21_bench.ground_truth(prepared, voc21_bench.label_lut(voc21), "a.png")
    np.testing.assert_array_equal(gt21, [[0, 0, 1, 1], [15, 15, IGNORE, 0]])
