import numpy as np
import pytest
from PIL import Image

from segdiff.data.converters import cocostuff
from segdiff.data.prepared import open_prepared
from segdiff.data.writer import PreparedWriter
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

SHAPE = (14, 15)
UNUSED_THING_VALUES = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}


def _raw_labels():
    """stuffthingmaps values: every value 0..181 once or more, and 255 (unlabeled)."""
    raw = np.concatenate([np.arange(182), np.full(SHAPE[0] * SHAPE[1] - 182, 255)])
    return np.random.default_rng(0).permutation(raw).reshape(SHAPE).astype(np.uint8)


def test_the_171_used_values_map_to_train_ids_in_order(tmp_path):
    coco = tmp_path / "coco_stuff164k"
    (coco / "images" / "val2017").mkdir(parents=True)
    (coco / "annotations" / "val2017").mkdir(parents=True)
    Image.new("RGB", SHAPE[::-1]).save(coco / "images/val2017/000000000139.jpg")
    Image.fromarray(_raw_labels()).save(coco / "annotations/val2017/000000000139.png")
    # mmseg's converter leaves its output beside the raw maps; it must not be read.
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(
        coco / "annotations/val2017/000000000139_labelTrainIds.png"
    )

    jobs = cocostuff.find_jobs(tmp_path, "val", "cocostuff171")
    vocabulary = get_vocabulary("cocostuff171").classes
    PreparedWriter(tmp_path / "out", "cocostuff", "cocostuff171", vocabulary).write_split(
        "val", jobs
    )
    prepared = open_prepared(tmp_path / "out", "val")
    assert prepared.image_names == ["000000000139.jpg"]
    used = sorted(set(range(182)) - UNUSED_THING_VALUES)
    lookup = np.full(256, IGNORE, dtype=np.int64)
    lookup[used] = np.arange(171)
    assert np.array_equal(prepared.benchmark_labels("000000000139.jpg"), lookup[_raw_labels()])
    assert len(prepared.classes("000000000139.jpg")) == 171


def test_a_folder_without_images_and_annotations_names_the_layout(tmp_path):
    with pytest.raises(SegDiffInputError, match="images/.*annotations/"):
        cocostuff.find_jobs(tmp_path, "val", "cocostuff171")
