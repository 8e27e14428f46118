import numpy as np
import pytest
from PIL import Image

from segdiff.data.converters import ade20k
from segdiff.data.prepared import open_prepared
from segdiff.data.writer import PreparedWriter
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

SHAPE = (9, 13)


def _raw_labels(seed):
    """Values 0..150 as in ADEChallengeData2016 (0 = "other objects")."""
    raw = np.random.default_rng(seed).integers(0, 151, SHAPE).astype(np.uint8)
    raw[0, :3] = [0, 1, 150]
    return raw


def _object_info(rows=150):
    lines = ["Idx\tRatio\tTrain\tVal\tName"]
    lines += [f"{i}\t0.01\t100\t10\tname {i}" for i in range(1, rows + 1)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def ade_root(tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    for folder in ("training", "validation"):
        (ade / "images" / folder).mkdir(parents=True)
        (ade / "annotations" / folder).mkdir(parents=True)
    (ade / "objectInfo150.txt").write_text(_object_info())
    for seed, stem in enumerate(["ADE_val_00000001", "ADE_val_00000002"]):
        Image.new("RGB", SHAPE[::-1], (10, 20, 30)).save(ade / "images/validation" / f"{stem}.jpg")
        Image.fromarray(_raw_labels(seed)).save(ade / "annotations/validation" / f"{stem}.png")
    return tmp_path


def test_ade150_is_raw_minus_one_with_other_ignored(ade_root, tmp_path):
    jobs = ade20k.find_jobs(ade_root, "val", "ade150")
    writer = PreparedWriter(tmp_path / "out", "ade20k", "ade150", get_vocabulary("ade150").classes)
    assert writer.write_split("val", jobs).failures == []
    prepared = open_prepared(tmp_path / "out", "val")
    assert prepared.image_names == ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    for seed, name in enumerate(prepared.image_names):
        raw = _raw_labels(seed).astype(np.int64)
        expected = np.where(raw == 0, IGNORE, raw - 1)
        assert np.array_equal(prepared.benchmark_labels(name), expected)
    assert prepared.classes("ADE_val_00000001.jpg")[:1] == ("wall",)


def test_missing_split_and_wrong_object_info_name_the_layout(ade_root):
    assert ade20k.find_jobs(ade_root, "train", "ade150") == []
    (ade_root / "ADEChallengeData2016" / "images" / "training").rmdir()
    with pytest.raises(SegDiffInputError, match="training.*Expected layout: ADEChallengeData2016"):
        ade20k.find_jobs(ade_root, "train", "ade150")
    (ade_root / "ADEChallengeData2016" / "objectInfo150.txt").write_text(_object_info(3))
    with pytest.raises(SegDiffInputError, match="lists 3 classes"):
        ade20k.find_jobs(ade_root, "val", "ade150")
