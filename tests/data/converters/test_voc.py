import numpy as np
import pytest
import scipy.io
from PIL import Image

from segdiff.data.converters import voc
from segdiff.data.prepared import open_prepared
from segdiff.data.writer import PreparedWriter
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

SHAPE = (10, 14)


def _voc_palette():
    """The standard VOC colour map: bits of the index spread over R, G, B from the MSB."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        palette += rgb
    return palette


def _raw_labels(seed):
    """Class indices 0..20 with a 255 "void" band, as in SegmentationClass."""
    raw = np.random.default_rng(seed).integers(0, 21, SHAPE).astype(np.uint8)
    raw[3, :] = 255
    return raw


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SHAPE[::-1], (90, 60, 30)).save(path)


def _palette_png(raw, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(raw)
    image.putpalette(_voc_palette())
    image.save(path)


@pytest.fixture
def voc_root(tmp_path):
    """VOCdevkit/VOC2012 with 2 train and 2 val ids, SegmentationClassAug and SBD."""
    devkit = tmp_path / "VOCdevkit" / "VOC2012"
    lists = devkit / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "val.txt").write_text("2007_000003\n2007_000004\n")
    for seed, i in enumerate(["2007_000001", "2007_000002", "2007_000003", "2007_000004"]):
        _image(devkit / "JPEGImages" / f"{i}.jpg")
        _palette_png(_raw_labels(seed), devkit / "SegmentationClass" / f"{i}.png")
    # Augmented labels: one shadows an official mask, one is a val id (dropped), one is new.
    (devkit / "SegmentationClassAug").mkdir()
    for i in ["2007_000002", "2007_000003", "2008_000010"]:
        _image(devkit / "JPEGImages" / f"{i}.jpg")
        aug = Image.fromarray(np.full(SHAPE, 7, np.uint8))  # gray, like DeepLab's archive
        aug.save(devkit / "SegmentationClassAug" / f"{i}.png")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset" / "cls"
    sbd.mkdir(parents=True)
    for i in ["2008_000010", "2008_000011"]:
        _image(devkit / "JPEGImages" / f"{i}.jpg")
        segmentation = np.full(SHAPE, 12, np.uint8)
        scipy.io.savemat(sbd / f"{i}.mat", {"GTcls": {"Segmentation": segmentation}})
    return tmp_path


def _prepare(root, out, split, benchmark):
    jobs = voc.find_jobs(root, split, benchmark)
    writer = PreparedWriter(out, "voc", benchmark, get_vocabulary(benchmark).classes)
    summary = writer.write_split(split, jobs)
    assert summary.failures == []
    return open_prepared(out, split)


def test_voc21_keeps_palette_indices_and_ignores_the_void_band(voc_root, tmp_path):
    prepared = _prepare(voc_root, tmp_path / "out", "val", "voc21")
    assert prepared.image_names == ["2007_000003.jpg", "2007_000004.jpg"]
    for seed, name in [(2, "2007_000003.jpg"), (3, "2007_000004.jpg")]:
        raw = _raw_labels(seed).astype(np.int64)
        expected = np.where(raw == 255, IGNORE, raw)
        assert np.array_equal(prepared.benchmark_labels(name), expected)


def test_voc20_ignores_background(voc_root, tmp_path):
    prepared = _prepare(voc_root / "VOCdevkit" / "VOC2012", tmp_path / "out", "val", "voc20")
    raw = _raw_labels(2).astype(np.int64)
    expected = np.where((raw == 0) | (raw == 255), IGNORE, raw - 1)
    assert np.array_equal(prepared.benchmark_labels("2007_000003.jpg"), expected)
    assert "background" not in prepared.vocabulary


def test_train_adds_the_augmented_images_but_never_val(voc_root, tmp_path):
    prepared = _prepare(voc_root, tmp_path / "out", "train", "voc21")
    names = ["2007_000001.jpg", "2007_000002.jpg", "2008_000010.jpg", "2008_000011.jpg"]
    assert prepared.image_names == names
    official = _raw_labels(1).astype(np.int64)  # SegmentationClass wins over the Aug mask
    expected = np.where(official == 255, IGNORE, official)
    assert np.array_equal(prepared.benchmark_labels("2007_000002.jpg"), expected)
    assert prepared.classes("2008_000010.jpg") == ("car",)  # SegmentationClassAug wins over SBD
    assert prepared.classes("2008_000011.jpg") == ("dog",)  # from SBD's GTcls.Segmentation


def test_val_falls_back_to_the_aug_copy_but_never_to_sbd(voc_root, tmp_path):
    devkit = voc_root / "VOCdevkit" / "VOC2012"
    (devkit / "SegmentationClass" / "2007_000003.png").unlink()
    (devkit / "SegmentationClass" / "2007_000004.png").unlink()
    sbd = voc_root / "benchmark_RELEASE" / "dataset" / "cls"
    scipy.io.savemat(sbd / "2007_000004.mat", {"GTcls": {"Segmentation": np.ones(SHAPE)}})
    jobs = voc.find_jobs(voc_root, "val", "voc21")
    writer = PreparedWriter(tmp_path / "out", "voc", "voc21", get_vocabulary("voc21").classes)
    summary = writer.write_split("val", jobs)
    assert open_prepared(tmp_path / "out", "val").classes("2007_000003.jpg") == ("car",)
    assert [name for name, _ in summary.failures] == ["2007_000004"]
    assert "annotation not found" in summary.failures[0][1]


def test_a_folder_without_voc_names_the_layout(tmp_path):
    with pytest.raises(SegDiffInputError, match="JPEGImages.*SegmentationClass"):
        voc.find_jobs(tmp_path, "val", "voc21")


def test_split_list_ids_that_are_not_file_names_never_escape_the_output(voc_root, tmp_path):
    """A crafted val.txt: ids with paths are reported and skipped; nothing is written (or
    overwritten) outside --output."""
    from typer.testing import CliRunner

    from segdiff.cli import app

    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    lists = voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    crafted = ["2007_000003", "../../../evil", str(victim.with_suffix("")), "..", ".hidden", "a\\b"]
    (lists / "val.txt").write_text("\n".join(crafted) + "\n")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    out = tmp_path / "P" / "out"
    args = ["prepare", "voc", str(voc_root), "--out", str(out), "--split", "val", "--workers", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output  # some images skipped
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert said.count("is not a plain file name") == 4 and "starts with a dot" in said
    assert victim.read_bytes() == b"precious"
    outside = [p for p in tmp_path.rglob("*") if out not in (p, *p.parents) and p != out.parent]
    assert {p: p.stat().st_mtime_ns for p in outside} == before  # only --output (and its parent)
    assert open_prepared(out, "val").image_names == ["2007_000003.jpg"]
