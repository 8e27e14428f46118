import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdiff.cli import app

runner = CliRunner()
FAST = ["--ensemble-size", "2", "--denoise-steps", "1", "--seed", "0"]


def _write_image(path, width=40, height=30, mode="RGB"):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def _infer(*args):
    return runner.invoke(app, ["infer", *map(str, args)])


def _assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_writes_the_four_outputs(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "photo.png")
    out = tmp_path / "out"
    result = _infer(
        image, "--classes", "sky, tree ,road", "--model", tiny_model_dir, "--output", out, *FAST
    )
    assert result.exit_code == 0, result.output
    labels = np.asarray(Image.open(out / "photo_labels.png"))
    assert labels.shape == (30, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 255}
    assert Image.open(out / "photo_uncertainty.png").size == (40, 30)
    assert Image.open(out / "photo_uncertainty_color.png").mode == "RGB"
    overlay = Image.open(out / "photo_overlay.png")
    assert overlay.height >= 30 and overlay.width > 40  # image plus legend
    record = json.loads((out / "photo.json").read_text())
    assert record["classes"] == ["sky", "tree", "road"]
    assert record["settings"]["seed"] == 0 and record["settings"]["ensemble_size"] == 2
    assert sum(record["fractions"].values()) + record["none_fraction"] == pytest.approx(1)
    for k, name in enumerate(record["classes"]):
        assert record["fractions"][name] == pytest.approx(np.mean(labels == k))


def test_same_seed_same_labels_and_output_processing_res(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png", width=64, height=16)
    for folder in ("one", "two"):
        _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", tmp_path / folder, *FAST)
    one = np.asarray(Image.open(tmp_path / "one" / "a_labels.png"))
    two = np.asarray(Image.open(tmp_path / "two" / "a_labels.png"))
    assert np.array_equal(one, two)
    result = _infer(
        image,
        "-c",
        "a,b",
        "--model",
        tiny_model_dir,
        "-o",
        tmp_path / "small",
        "--output-processing-res",
        "--processing-res",
        "32",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "small" / "a_labels.png").size == (32, 8)


def test_classes_from_a_file_and_folder_and_glob_inputs(tmp_path, tiny_model_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "x.jpg")
    _write_image(folder / "y.png", mode="L")
    _write_image(folder / "z.png", mode="RGBA")
    names = tmp_path / "classes.txt"
    names.write_text("# my classes\ncat\nchest of drawers, chest\n\n")
    out = tmp_path / "out"
    result = _infer(folder, "--classes", names, "--model", tiny_model_dir, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.json")) == ["x.json", "y.json", "z.json"]
    assert json.loads((out / "x.json").read_text())["classes"] == ["cat", "chest of drawers, chest"]
    glob_out = tmp_path / "glob"
    result = _infer(
        str(folder / "*.png"), "-c", "a", "--model", tiny_model_dir, "-o", glob_out, *FAST
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in glob_out.glob("*.json")) == ["y.json", "z.json"]


def test_folder_run_goes_past_bad_files_and_exits_2_at_the_end(tmp_path, tiny_model_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "good.png")
    (folder / "corrupt.png").write_bytes(b"garbage")
    data = (_write_image(tmp_path / "full.jpg", 64, 64)).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    result = _infer(folder, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST)
    _assert_clean_error(
        result, "2 of 3 images could not be segmented", "corrupt.png", "truncated.jpg"
    )
    assert (out / "good_labels.png").is_file() and not (out / "corrupt.json").exists()


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("", "empty"),
        ("a,,b", "empty name"),
        ("cat,dog,cat", "twice"),
        (",".join(f"c{i}" for i in range(256)), "at most 255"),
    ],
    ids=["empty", "empty-name", "duplicate", "256-classes"],
)
def test_bad_class_lists(tmp_path, tiny_model_dir, classes, message):
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "--classes", classes, "--model", tiny_model_dir, *FAST)
    _assert_clean_error(result, message)


def test_missing_input_and_bad_options(tmp_path, tiny_model_dir):
    result = _infer(tmp_path / "nope.png", "-c", "a", "--model", tiny_model_dir)
    _assert_clean_error(result, "input not found")
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "-c", "a", "--model", tiny_model_dir, "--batch-size", "-1")
    _assert_clean_error(result, "--batch-size")
    result = _infer(image, "-c", "a", "--model", tiny_model_dir, "--ensemble-size", "0")
    _assert_clean_error(result, "--ensemble-size must be at least 1")


def test_not_a_segdiff_model(tmp_path, tiny_sd2_dir):
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "-c", "a,b", "--model", tiny_sd2_dir)
    _assert_clean_error(result, "not a segdiff model")
    result = _infer(image, "-c", "a,b", "--model", tmp_path)
    _assert_clean_error(result, "no model_index.json")


def test_skip_existing_resumes_without_redoing_work(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST)
    (out / "a.json").write_text('{"kept": true}')
    result = _infer(
        image, "-c", "a,b", "--model", tiny_model_dir, "-o", out, "--skip-existing", *FAST
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "a.json").read_text()) == {"kept": True}


def test_leftover_temporaries_are_no_inputs_and_the_output_is_cleaned(
    tmp_path, tiny_model_dir, stale_temporary
):
    """A 0-byte temporary left by a killed run in a folder of images is ignored (it used to
    fail the run with exit 2), and the stale temporaries in --output are removed."""
    images = tmp_path / "images"
    images.mkdir()
    _write_image(images / "a.png")
    stale_temporary(images, "b_overlay.png")
    (images / ".thumbnails").mkdir()
    _write_image(images / ".thumbnails" / "c.png")
    out = tmp_path / "out"
    leftover = stale_temporary(out, "a_labels.png")
    result = _infer(images, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "1 of 1 images segmented" in result.output
    assert not leftover.exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "a.json", "a_labels.png", "a_overlay.png", "a_uncertainty.png", "a_uncertainty_color.png"
    ]  # fmt: skip


def test_disk_full_stops_with_exit_2_and_keeps_what_was_written(
    tmp_path, tiny_model_dir, full_disk
):
    images = tmp_path / "images"
    images.mkdir()
    for stem in ("a", "b", "c"):
        _write_image(images / f"{stem}.png")
    out = tmp_path / "out"
    full_disk(".b_")
    result = _infer(images, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST)
    _assert_clean_error(result, "disk full at")
    assert f"diskfullat{out / 'b_labels.png'}" in "".join(result.output.split())
    assert (out / "a.json").is_file() and not (out / "c.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_one_member_measures_no_uncertainty_and_says_so(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    assert _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST).exit_code == 0
    assert (out / "a_uncertainty.png").is_file()
    one = ["--ensemble-size", "1", "--denoise-steps", "1", "--seed", "0"]
    result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *one)
    assert result.exit_code == 0, result.output
    assert "with one ensemble member uncertainty is not measured" in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a_labels.png", "a_overlay.png"]
    record = json.loads((out / "a.json").read_text())
    assert record["mean_uncertainty"] is None and record["uncertainty"].startswith("not measured")
