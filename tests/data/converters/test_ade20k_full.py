import json

import numpy as np
import pytest
from PIL import Image

from segdiff.data.converters import ade20k_full
from segdiff.data.prepared import open_prepared
from segdiff.data.writer import PreparedWriter
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

# Full-ADE class index -> ADE-847 train id, from the benchmark list (0 and 246 are not in it).
KNOWN = {2978: 0, 312: 1, 2420: 2, 3148: 846, 0: IGNORE, 246: IGNORE, 5: IGNORE}


def _class_map():
    values = np.array(list(KNOWN))
    return np.random.default_rng(0).choice(values, size=(8, 12))


def _seg_png(class_map, path):
    """Encode as the release does: R = class // 256 * 10, G = class % 256, B = instance."""
    rgb = np.zeros((*class_map.shape, 3), np.uint8)
    rgb[..., 0] = class_map // 256 * 10
    rgb[..., 1] = class_map % 256
    rgb[..., 2] = np.arange(class_map.size).reshape(class_map.shape) % 7 * 5
    Image.fromarray(rgb).save(path)


def test_ade847_decodes_r_and_g_and_ignores_other_classes(tmp_path):
    scene = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "validation" / "urban" / "street"
    scene.mkdir(parents=True)
    stem = "ADE_val_00000001"
    Image.new("RGB", (12, 8)).save(scene / f"{stem}.jpg")
    _seg_png(_class_map(), scene / f"{stem}_seg.png")
    (scene / f"{stem}.json").write_text(json.dumps({"annotation": {"object": []}}))
    (scene / stem).mkdir()  # instance masks live here; they are PNGs, never images
    Image.new("L", (12, 8)).save(scene / stem / f"instance_000_{stem}.png")

    jobs = ade20k_full.find_jobs(tmp_path, "val", "ade847")
    assert [job.name for job in jobs] == [stem]
    vocabulary = get_vocabulary("ade847").classes
    PreparedWriter(tmp_path / "out", "ade20k-full", "ade847", vocabulary).write_split("val", jobs)
    prepared = open_prepared(tmp_path / "out", "val")
    lookup = np.vectorize(KNOWN.get)
    assert np.array_equal(prepared.benchmark_labels(f"{stem}.jpg"), lookup(_class_map()))
    assert prepared.classes(f"{stem}.jpg")[:2] == ("wall", "building, edifice")


def _objects(*objects):
    """A per-image JSON: (name_ndx, name, part_level) per object."""
    return json.dumps(
        {
            "annotation": {
                "object": [
                    {"id": i, "name": name, "name_ndx": index, "parts": {"part_level": level}}
                    for i, (index, name, level) in enumerate(objects)
                ]
            }
        }
    )


def test_raw_mode_names_every_whole_object_of_both_splits(tmp_path):
    ade = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE"
    train_scene, val_scene = ade / "training" / "a" / "b", ade / "validation" / "c" / "d"
    train_scene.mkdir(parents=True)
    val_scene.mkdir(parents=True)
    class_map = np.array([[2978, 312, 5], [999, 246, 0]])
    for scene, stem in ((train_scene, "ADE_train_00000001"), (val_scene, "ADE_val_00000001")):
        Image.new("RGB", (3, 2)).save(scene / f"{stem}.jpg")
        _seg_png(class_map, scene / f"{stem}_seg.png")
    (train_scene / "ADE_train_00000001.json").write_text(
        _objects((2978, "wall", 0), (5, "zither ", 0), (999, "door knob", 1))
    )
    (val_scene / "ADE_val_00000001.json").write_text(_objects((312, "building, edifice", 0)))

    assert ade20k_full.vocabulary(tmp_path, "raw") == ("zither", "building, edifice", "wall")
    jobs = ade20k_full.find_jobs(tmp_path, "val", "raw")
    vocabulary = ade20k_full.vocabulary(tmp_path, "raw")
    PreparedWriter(tmp_path / "out", "ade20k-full", "raw", vocabulary).write_split("val", jobs)
    labels = open_prepared(tmp_path / "out", "val").benchmark_labels("ADE_val_00000001.jpg")
    # 999 is named only as a part, 246 and 0 not at all: all three are ignored.
    assert labels.tolist() == [[2, 1, 0], [IGNORE, IGNORE, IGNORE]]

    (val_scene / "ADE_val_00000001.json").write_text("{broken")
    ade20k_full.raw_vocabulary.cache_clear()
    (job,) = ade20k_full.find_jobs(tmp_path, "val", "raw")
    with pytest.raises(SegDiffInputError, match="cannot read the object names"):
        job.convert()


def test_a_folder_without_the_release_names_the_layout(tmp_path):
    with pytest.raises(SegDiffInputError, match="ADE20K_2021_17_01/images/ADE"):
        ade20k_full.find_jobs(tmp_path, "val", "ade847")


def test_ade847_follows_the_published_resolution_protocol(tmp_path):
    """Shorter side above 512 -> 512 (other side rounded), image bilinear, labels nearest;
    smaller images as they are (linked). The --benchmark raw keeps every size."""
    from typer.testing import CliRunner

    from segdiff.cli import app

    scene = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "validation" / "home" / "room"
    scene.mkdir(parents=True)
    sizes = {"ADE_val_00000001": (1201, 800), "ADE_val_00000002": (600, 900),
             "ADE_val_00000003": (500, 400)}  # (width, height)  # fmt: skip
    for stem, (width, height) in sizes.items():
        Image.new("RGB", (width, height), (200, 100, 50)).save(scene / f"{stem}.jpg")
        class_map = np.full((height, width), 2978)
        class_map[:, width // 2 :] = 312  # wall | building
        _seg_png(class_map, scene / f"{stem}_seg.png")
        (scene / f"{stem}.json").write_text(json.dumps({"annotation": {"object": []}}))
    out = tmp_path / "out"
    args = ["prepare", "ade20k-full", str(tmp_path), "--out", str(out), "--split", "val"]
    result = CliRunner().invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["options"] == {"shorter_side": 512}
    prepared = open_prepared(out, "val")
    expected = {"ADE_val_00000001.png": (769, 512), "ADE_val_00000002.png": (512, 768),
                "ADE_val_00000003.jpg": (500, 400)}  # fmt: skip
    assert prepared.image_names == sorted(expected)
    for name, (width, height) in expected.items():
        with Image.open(prepared.image_path(name)) as image:
            assert image.size == (width, height)
            assert np.abs(np.asarray(image, int) - (200, 100, 50)).max() <= 3
        labels = prepared.benchmark_labels(name)
        assert labels.shape == (height, width)
        assert (labels[:, : width // 2 - 1] == 0).all() and (labels[:, width // 2 + 1 :] == 1).all()
    big = scene / "ADE_val_00000001.jpg"
    lookup = np.zeros(4000, np.uint16)
    assert ade20k_full.read_sample(big, big.with_name(f"{big.stem}_seg.png"), lookup).image == big
    assert ade20k_full.options("raw") is None  # training data keeps its size
