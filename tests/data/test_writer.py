import json
import os
from functools import partial

import numpy as np
import pytest
from PIL import Image

from segdiff import depth_coding
from segdiff.data import shapes
from segdiff.data.prepared import open_prepared
from segdiff.data.writer import Converted, Job, PreparedWriter, depth_code
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

VOCABULARY = [f"class {i}" for i in range(300)]


def _labels(seed, shape=(12, 16), classes=(3, 17, 299)):
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([*classes, IGNORE], dtype=np.uint16), size=shape)
    labels[0, :2] = classes[:2]  # the first two classes are always present
    return labels


def _read(image, seed, shape=(12, 16)):
    return Converted(labels=_labels(seed, shape), image=image)


def _unreadable(path):
    raise SegDiffInputError(f"cannot read annotation {path}")


def _must_not_run():
    raise AssertionError("a finished image was converted again")


def _source_images(folder, count, shape=(12, 16)):
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"img{i}.jpg"
        Image.new("RGB", shape[::-1], (i * 40, 20, 90)).save(path, quality=70)
        paths.append(path)
    return paths


def _writer(out):
    return PreparedWriter(out, "toy", "toy300", VOCABULARY)


def test_masks_give_back_the_labels_and_images_are_linked(tmp_path):
    images = _source_images(tmp_path / "src", 3)
    jobs = [Job(f"id{i}", partial(_read, path, i)) for i, path in enumerate(images)]
    summary = _writer(tmp_path / "out").write_split("val", jobs)
    assert (summary.images, summary.written, summary.resumed, summary.failures) == (3, 3, 0, [])

    prepared = open_prepared(tmp_path / "out", "val")
    assert prepared.vocabulary == tuple(VOCABULARY)
    assert prepared.image_names == ["id0.jpg", "id1.jpg", "id2.jpg"]
    for i, name in enumerate(prepared.image_names):
        expected = _labels(i)
        assert np.array_equal(prepared.benchmark_labels(name), expected)
        assert prepared.classes(name) == ("class 3", "class 17", "class 299")
        linked = prepared.image_path(name)
        assert linked.read_bytes() == images[i].read_bytes()
        assert os.stat(linked).st_ino == os.stat(images[i]).st_ino
        with Image.open(prepared.mask_path(name)) as mask:
            assert mask.mode == "L" and mask.size == (16, 12)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["splits"] == {"val": 3} and meta["format_version"] == 1
    img_list = (tmp_path / "out" / "val" / "img_list.txt").read_text().splitlines()
    gt_list = (tmp_path / "out" / "val" / "gt_list.txt").read_text().splitlines()
    assert img_list == [str(prepared.image_path(n).resolve()) for n in prepared.image_names]
    assert gt_list == [str(prepared.mask_path(n).resolve()) for n in prepared.image_names]


def test_depth_code_uses_the_image_class_list_in_vocabulary_order():
    labels = np.array([[299, 5], [IGNORE, 5]], dtype=np.uint16)
    present, mask = depth_code(labels, 300)
    assert present.tolist() == [5, 299]
    levels = depth_coding.gray_levels(2)
    assert mask.tolist() == [[levels[1], levels[0]], [0, levels[0]]]


def test_all_ignored_image_has_an_empty_class_list(tmp_path):
    (image,) = _source_images(tmp_path / "src", 1)
    job = Job("blank", partial(_read_blank, image))
    _writer(tmp_path / "out").write_split("val", [job])
    prepared = open_prepared(tmp_path / "out", "val")
    assert prepared.classes("blank.jpg") == ()
    assert not prepared.load_mask("blank.jpg").any()
    assert (prepared.benchmark_labels("blank.jpg") == IGNORE).all()


def _read_blank(image):
    return Converted(labels=np.full((12, 16), IGNORE, dtype=np.uint16), image=image)


def test_resume_skips_finished_images_and_keeps_their_entries(tmp_path):
    images = _source_images(tmp_path / "src", 3)
    out = tmp_path / "out"
    _writer(out).write_split("train", [Job(f"id{i}", partial(_read, images[i], i)) for i in (0, 1)])
    before = (out / "train" / "text.json").read_text()
    with (out / "train" / ".journal.jsonl").open("a") as journal:
        journal.write('{"name": "id2", "ima')  # a line cut short by a crash

    jobs = [Job("id0", _must_not_run), Job("id1", _must_not_run)]
    jobs.append(Job("id2", partial(_read, images[2], 2)))
    summary = _writer(out).write_split("train", jobs)
    assert (summary.images, summary.written, summary.resumed) == (3, 1, 2)
    text = json.loads((out / "train" / "text.json").read_text())
    assert {k: v for k, v in text.items() if k != "id2.jpg"} == json.loads(before)
    assert np.array_equal(open_prepared(out, "train").benchmark_labels("id2.jpg"), _labels(2))


def test_an_image_whose_mask_vanished_is_done_again(tmp_path):
    (image,) = _source_images(tmp_path / "src", 1)
    out = tmp_path / "out"
    _writer(out).write_split("val", [Job("id0", partial(_read, image, 0))])
    (out / "val" / "masks" / "id0.png").unlink()
    summary = _writer(out).write_split("val", [Job("id0", partial(_read, image, 0))])
    assert (summary.written, summary.resumed) == (1, 0)
    assert (out / "val" / "masks" / "id0.png").is_file()


def test_unreadable_samples_are_reported_and_the_rest_written(tmp_path):
    images = _source_images(tmp_path / "src", 2)
    jobs = [
        Job("good", partial(_read, images[0], 0)),
        Job("bad", partial(_unreadable, tmp_path / "bad.png")),
        Job("small", partial(_read, images[1], 1, (5, 5))),
    ]
    summary = _writer(tmp_path / "out").write_split("val", jobs)
    assert summary.images == 1
    reasons = dict(summary.failures)
    assert set(reasons) == {"bad", "small"}
    assert "cannot read annotation" in reasons["bad"]
    assert "differs from the image" in reasons["small"]
    assert open_prepared(tmp_path / "out", "val").image_names == ["good.jpg"]
    assert not (tmp_path / "out" / "val" / "masks" / "bad.png").exists()


def test_more_classes_than_a_mask_can_code_is_a_failure(tmp_path):
    (image,) = _source_images(tmp_path / "src", 1, shape=(15, 20))
    job = Job("crowded", partial(_read_crowded, image))
    summary = _writer(tmp_path / "out").write_split("val", [job])
    assert "at most 255" in summary.failures[0][1]


def _read_crowded(image):
    return Converted(labels=np.arange(300, dtype=np.uint16).reshape(15, 20), image=image)


def test_a_folder_of_another_dataset_is_refused(tmp_path):
    _writer(tmp_path / "out")
    with pytest.raises(SegDiffInputError, match="different dataset"):
        PreparedWriter(tmp_path / "out", "other", "toy300", VOCABULARY)
    with pytest.raises(SegDiffInputError, match="different options"):
        PreparedWriter(tmp_path / "out", "toy", "toy300", VOCABULARY, {"seed": 1})


def test_duplicate_ids_are_refused(tmp_path):
    jobs = [Job("same", _must_not_run), Job("same", _must_not_run)]
    with pytest.raises(SegDiffInputError, match="share the ids"):
        _writer(tmp_path / "out").write_split("val", jobs)


def test_two_workers_write_what_one_writes(tmp_path):
    jobs = shapes.find_jobs("val", 12, seed=3, size=(20, 28))
    for workers, out in ((1, tmp_path / "serial"), (2, tmp_path / "parallel")):
        writer = PreparedWriter(out, "shapes", "shapes", get_vocabulary("shapes").classes)
        assert writer.write_split("val", jobs, workers=workers).written == 12
    serial, parallel = tmp_path / "serial" / "val", tmp_path / "parallel" / "val"
    assert (serial / "text.json").read_text() == (parallel / "text.json").read_text()
    for mask in sorted((serial / "masks").iterdir()):
        assert mask.read_bytes() == (parallel / "masks" / mask.name).read_bytes()


@pytest.mark.parametrize(
    "name", ["../evil", "/abs/evil", "a/b", "a\\b", "..", ".", "", ".hidden", "x" * 201, "a\0b"]
)
def test_an_id_that_is_not_a_plain_file_stem_is_skipped_for_any_converter(tmp_path, name):
    jobs = [Job("ok", partial(_read, np.zeros((12, 16, 3), np.uint8), 0)), Job(name, _must_not_run)]
    summary = _writer(tmp_path / "out").write_split("val", jobs)
    assert summary.images == 1 and [n for n, _ in summary.failures] == [name]
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"ok.png", "meta.json", "text.json", "img_list.txt", "gt_list.txt",
                       ".journal.jsonl"}  # fmt: skip


def test_a_rerun_removes_the_temporaries_a_killed_run_left(tmp_path, stale_temporary):
    """A worker killed mid-write leaves a hidden temporary; the next run deletes it, and a
    temporary of a process still running is left alone."""
    jobs = [Job(f"id{i}", partial(_read, np.zeros((12, 16, 3), np.uint8), i)) for i in range(2)]
    _writer(tmp_path / "out").write_split("val", jobs[:1])
    masks = tmp_path / "out" / "val" / "masks"
    stale = stale_temporary(masks, "id1.png")  # a 0-byte leftover
    alive = masks / f".id9.png.segdiff-tmp-{os.getpid()}-00c0ffee.png"
    alive.write_bytes(b"")
    _writer(tmp_path / "out").write_split("val", jobs)
    assert not stale.exists() and alive.exists()
    assert open_prepared(tmp_path / "out", "val").image_names == ["id0.png", "id1.png"]


def test_disk_full_stops_the_run_and_keeps_the_finished_images(tmp_path, monkeypatch, full_disk):
    from segdiff.errors import DiskFullError

    jobs = [Job(f"id{i}", partial(_read, np.zeros((12, 16, 3), np.uint8), i)) for i in range(4)]
    with pytest.raises(DiskFullError, match="disk full at .*id2.png"):
        full_disk("id2")  # two images and their masks fit
        _writer(tmp_path / "out").write_split("val", jobs)
    monkeypatch.undo()
    split = tmp_path / "out" / "val"
    assert len((split / ".journal.jsonl").read_text().splitlines()) == 2
    summary = _writer(tmp_path / "out").write_split("val", jobs)
    assert (summary.resumed, summary.written, summary.images) == (2, 2, 4)
    assert not [p for p in split.rglob(".*") if p.name != ".journal.jsonl"]
