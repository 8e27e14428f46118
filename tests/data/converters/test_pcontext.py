import numpy as np
import pytest
import scipy.io
from PIL import Image

from segdiff.data.converters import pcontext
from segdiff.data.prepared import open_prepared
from segdiff.data.writer import PreparedWriter
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

SHAPE = (11, 14)
PC59_IDS = [
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113,
    115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326,
    347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
]  # fmt: skip
VAL_IDS = ["2008_000002", "2008_000003"]  # in the standard 5,104-image val list
TRAIN_ID = "2008_000001"


def _label_map(seed):
    """A uint16 LabelMap with labels.txt ids 1..459 (and one 0, which must be ignored)."""
    label_map = np.random.default_rng(seed).integers(1, 460, SHAPE).astype(np.uint16)
    label_map[0, :4] = [0, 2, 397, 459]
    return label_map


@pytest.fixture
def context_root(tmp_path):
    voc2010 = tmp_path / "VOCdevkit" / "VOC2010"
    (voc2010 / "JPEGImages").mkdir(parents=True)
    (voc2010 / "trainval").mkdir()
    (voc2010 / "labels.txt").write_text("".join(f"{i}: name{i}\n" for i in range(1, 460)))
    for seed, i in enumerate([TRAIN_ID, *VAL_IDS]):
        Image.new("RGB", SHAPE[::-1], (5, 5, 5)).save(voc2010 / "JPEGImages" / f"{i}.jpg")
        scipy.io.savemat(voc2010 / "trainval" / f"{i}.mat", {"LabelMap": _label_map(seed)})
    return tmp_path


def _prepare(root, out, split, benchmark):
    jobs = pcontext.find_jobs(root, split, benchmark)[:2]  # the fixture holds two val images
    writer = PreparedWriter(out, "pcontext", benchmark, get_vocabulary(benchmark).classes)
    assert writer.write_split(split, jobs).failures == []
    return open_prepared(out, split)


def test_pc59_keeps_the_59_frequent_classes(context_root, tmp_path):
    prepared = _prepare(context_root, tmp_path / "out", "val", "pc59")
    assert prepared.image_names == [f"{i}.jpg" for i in VAL_IDS]
    lookup = np.full(460, IGNORE, dtype=np.int64)
    lookup[PC59_IDS] = np.arange(59)
    for seed, name in enumerate(prepared.image_names, start=1):
        assert np.array_equal(prepared.benchmark_labels(name), lookup[_label_map(seed)])
    assert "diningtable" in prepared.classes(prepared.image_names[0])


def test_pc459_is_labelmap_minus_one_and_train_is_the_rest(context_root, tmp_path):
    prepared = _prepare(context_root, tmp_path / "out", "train", "pc459")
    assert prepared.image_names == [f"{TRAIN_ID}.jpg"]
    label_map = _label_map(0).astype(np.int64)
    expected = np.where(label_map == 0, IGNORE, label_map - 1)
    assert np.array_equal(prepared.benchmark_labels(f"{TRAIN_ID}.jpg"), expected)


def test_val_images_missing_on_disk_are_reported(context_root, tmp_path):
    jobs = pcontext.find_jobs(context_root, "val", "pc59")
    assert len(jobs) == 5104
    writer = PreparedWriter(tmp_path / "out", "pcontext", "pc59", get_vocabulary("pc59").classes)
    summary = writer.write_split("val", jobs[:3])
    assert summary.images == 2
    assert summary.failures == [(jobs[2].name, f"annotation not found: {jobs[2].convert.args[1]}")]


def test_val_ids_ship_with_the_package():
    ids = pcontext.val_image_ids()
    assert len(ids) == len(set(ids)) == 5104
    assert TRAIN_ID not in ids and set(VAL_IDS) <= set(ids)


def test_a_labels_txt_that_is_not_the_459_list_is_refused(context_root):
    (context_root / "VOCdevkit" / "VOC2010" / "labels.txt").write_text("1: a\n2: b\n")
    with pytest.raises(SegDiffInputError, match="459 PASCAL-Context ids"):
        pcontext.find_jobs(context_root, "val", "pc59")
