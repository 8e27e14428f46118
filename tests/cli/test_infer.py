import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from segdiff import run_folder
from segdiff.cli import app
from segdiff.model import BUNDLED_MODEL_DIR
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.recipes import Recipe, save_recipe
from segdiff.training import checkpoints

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


def test_writes_labels_overlay_uncertainty_and_json(tmp_path, tiny_model_dir):
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


def test_skip_existing_skips_only_what_the_same_settings_made(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    model = ["--model", tiny_model_dir, "-o", out]
    assert _infer(image, "-c", "a,b", *model, *FAST).exit_code == 0
    record = json.loads((out / "a.json").read_text())
    marked = {**record, "kept": True}
    (out / "a.json").write_text(json.dumps(marked))

    def rerun(*args):
        result = _infer(image, *model, "--skip-existing", *args)
        assert result.exit_code == 0, result.output
        return json.loads((out / "a.json").read_text())

    assert rerun("-c", "a,b", *FAST) == marked  # same input, classes and settings
    no_seed = ["--ensemble-size", "2", "--denoise-steps", "1"]
    assert rerun("-c", "a,b", *no_seed) == marked  # no --seed: the recorded seed counts
    changed = rerun("-c", "a,b", "--ensemble-size", "2", "--denoise-steps", "2", "--seed", "0")
    assert changed["settings"]["num_inference_steps"] == 2 and "kept" not in changed
    redone = rerun("-c", "b,a", *FAST)
    assert redone["classes"] == ["b", "a"] and "kept" not in redone
    (out / "a.json").write_text(json.dumps(marked))
    assert "kept" not in rerun("-c", "a,b", *FAST[:-1], "7")  # another seed given


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("clases.txt", "did you mean classes.txt?"),
        ("ade15", "did you mean ade150?"),
        ("cat sofa window", 'Did you mean "cat,sofa,window"?'),
        ("circle,Circle", "differ only in case or spacing"),
    ],
)
def test_near_miss_class_lists_exit_2(tmp_path, tiny_model_dir, classes, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes.txt").write_text("circle\nsquare\n")
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "-c", classes, "--model", tiny_model_dir, "-o", "out", *FAST)
    _assert_clean_error(result, message)
    assert not (tmp_path / "out").exists()


def test_quoted_names_and_a_class_file_with_a_bom(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    result = _infer(image, "-c", '"circle", "square"', "--model", tiny_model_dir, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "a.json").read_text())["classes"] == ["circle", "square"]
    names = tmp_path / "classes.txt"
    names.write_bytes("background\ncircle\n".encode("utf-8-sig"))
    result = _infer(image, "-c", names, "--model", tiny_model_dir, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "a.json").read_text())["classes"] == ["background", "circle"]
    names.write_bytes("background\ncafé\n".encode("latin-1"))
    result = _infer(image, "-c", names, "--model", tiny_model_dir, "-o", out, *FAST)
    _assert_clean_error(result, "is not UTF-8 text", "save it as UTF-8")


def test_without_output_each_run_gets_a_new_folder(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = _write_image(tmp_path / "photo.png")
    for expected in ("photo", "photo-2"):
        result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, *FAST)
        assert result.exit_code == 0, result.output
        assert f"runs/infer/{expected}" in result.output
        assert (tmp_path / "runs" / "infer" / expected / "photo.json").is_file()
    result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, "--exist-ok", *FAST)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs" / "infer" / "photo-3").exists()
    assert sorted(p.name for p in (tmp_path / "runs" / "infer").iterdir()) == ["photo", "photo-2"]


def test_output_that_is_a_file_exits_2(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", taken, *FAST)
    _assert_clean_error(result, "is a file; give a folder")
    assert taken.read_text() == "not a folder"


def test_a_name_that_is_not_utf8_skips_only_that_file(tmp_path, tiny_model_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "good.png")
    _write_image(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png")))
    out = tmp_path / "out"
    for extra in ([], ["--skip-existing"]):
        result = _infer(folder, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST, *extra)
        _assert_clean_error(result, "1 of 2 images could not be segmented", "caf\\xe9.png")
        assert "not valid UTF-8" in result.output
        assert (out / "good.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "good.json", "good_labels.png", "good_overlay.png", "good_uncertainty.png",
        "good_uncertainty_color.png",
    ]  # fmt: skip


def test_a_decompression_bomb_names_the_limit_and_how_to_raise_it(
    tmp_path, tiny_model_dir, monkeypatch, png_header
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)
    result = _infer(bomb, "-c", "a,b", "--model", tiny_model_dir, "-o", tmp_path / "o", *FAST)
    _assert_clean_error(result, "178,956,970", "SEGDIFF_MAX_IMAGE_PIXELS")
    image = _write_image(tmp_path / "small.png")  # 1200 pixels
    args = [image, "-c", "a,b", "--model", tiny_model_dir, "-o", tmp_path / "o", *FAST]
    result = runner.invoke(
        app, ["infer", *map(str, args)], env={"SEGDIFF_MAX_IMAGE_PIXELS": "1000"}
    )
    _assert_clean_error(result, "more pixels (1,200) than the 1,000")
    result = runner.invoke(
        app, ["infer", *map(str, args)], env={"SEGDIFF_MAX_IMAGE_PIXELS": "lots"}
    )
    _assert_clean_error(result, "SEGDIFF_MAX_IMAGE_PIXELS must be a whole number")


def test_a_processing_size_that_cannot_fit_is_refused_before_allocating(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    result = _infer(
        image, "-c", "a,b", "--model", tiny_model_dir, "-o", tmp_path / "o",
        "--processing-res", "100000", *FAST,
    )  # fmt: skip
    _assert_clean_error(result, "100000x75000 pixels", "TB of memory", "--processing-res")


def test_seed_out_of_range_exits_2(tmp_path, tiny_model_dir):
    image = _write_image(tmp_path / "a.png")
    for seed in ("-5", str(10**23)):
        result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, "--seed", seed)
        _assert_clean_error(result, "--seed must be between 0 and 4294967295")


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 9000000000000 bytes. Error code 12"
        ),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB."),
    ],
    ids=["cpu", "cuda"],
)
def test_out_of_memory_says_what_to_lower(tmp_path, tiny_model_dir, monkeypatch, error):
    def run_out(*args, **kwargs):
        raise error

    monkeypatch.setattr("segdiff.model.pipeline.SegDiffPipeline.__call__", run_out)
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", tmp_path / "o", *FAST)
    _assert_clean_error(
        result, "out of memory", str(error)[:40], "--processing-res", "--batch-size",
        "--ensemble-size",
    )  # fmt: skip


def test_other_runtime_errors_keep_their_traceback(tmp_path, tiny_model_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("segdiff.model.pipeline.SegDiffPipeline.__call__", broken)
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "-c", "a,b", "--model", tiny_model_dir, "-o", tmp_path / "o", *FAST)
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_help_shows_where_model_defaults_come_from():
    result = runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # help lines wrap inside a box
    bundled = json.loads((BUNDLED_MODEL_DIR / "model_index.json").read_text())
    for key in (
        "default_ensemble_size",
        "default_denoising_steps",
        "default_processing_resolution",
    ):
        assert f"the model's {key} in model_index.json" in text
        assert f"the bundled model's is {bundled[key]}" in text


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


MODEL_DAMAGE = {
    "os-system": (
        lambda m: _edit_json(m / "model_index.json", lambda d: d.update(cam=["os", "system"])),
        '"cam" is ["os", "system"], expected ["segdiff.model.cam", "ContentAttentionModule"]',
    ),
    "automodel": (
        lambda m: _edit_json(
            m / "model_index.json", lambda d: d.update(text_encoder=["transformers", "AutoModel"])
        ),
        '"text_encoder" is ["transformers", "AutoModel"]',
    ),
    "extra-entry": (
        lambda m: _edit_json(m / "model_index.json", lambda d: d.update(safety=["x", "Y"])),
        '"safety" is no part of a segdiff model',
    ),
    "bad-default": (
        lambda m: _edit_json(
            m / "model_index.json", lambda d: d.update(default_ensemble_size="many")
        ),
        '"default_ensemble_size" has the invalid value "many"',
    ),
    "index-list": (
        lambda m: (m / "model_index.json").write_text("[]"),
        "model_index.json must hold a JSON object",
    ),
    "module-file": (
        lambda m: (m / "cam" / "modeling_cam.py").write_text("import os"),
        "holds Python files (cam/modeling_cam.py)",
    ),
    "pipeline-file": (
        lambda m: (m / "pipeline_segdiff.py").write_text("from segdiff import SegDiffPipeline"),
        "holds Python files (pipeline_segdiff.py)",
    ),
    "class-name-list": (
        lambda m: _edit_json(m / "model_index.json", lambda d: d.update(_class_name=["os", "x"])),
        "not a segdiff model",
    ),
    "truncated-weights": (
        lambda m: _truncate(m / "unet" / "diffusion_pytorch_model.safetensors"),
        "is not a complete safetensors file",
    ),
    "random-weights": (
        lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(999)),
        "is not a complete safetensors file",
    ),
    "no-weights": (
        lambda m: (m / "cam" / "diffusion_pytorch_model.safetensors").unlink(),
        "has no .safetensors weights",
    ),
    "invalid-config": (
        lambda m: (m / "unet" / "config.json").write_text("{not json"),
        "unet/config.json is not readable UTF-8 JSON",
    ),
    "config-list": (
        lambda m: (m / "vae" / "config.json").write_text("[1, 2]"),
        "vae/config.json must hold a JSON object",
    ),
    "petabyte-config": (
        lambda m: _edit_json(
            m / "vae" / "config.json", lambda d: d.update(block_out_channels=[10**8, 10**8])
        ),
        "parameters) needs at least",
    ),
    "config-off-its-weights": (
        lambda m: _edit_json(
            m / "vae" / "config.json", lambda d: d.update(block_out_channels=[16, 16])
        ),
        "cannot load the model",
    ),
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
def test_a_model_folder_is_checked_as_data(tmp_path, tiny_model_dir, damage):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    spoil, message = MODEL_DAMAGE[damage]
    spoil(model)
    image = _write_image(tmp_path / "a.png")
    result = _infer(image, "-c", "a,b", "--model", model, "-o", tmp_path / "o", *FAST)
    _assert_clean_error(result, message)


def test_a_checkpoint_or_a_run_works_as_model(tmp_path, tiny_pipeline):
    run = tmp_path / "run"
    save_recipe(Recipe(name="tiny"), run / run_folder.RECIPE)
    checkpoints.save_frozen(run, tiny_pipeline.components)
    checkpoint = run_folder.checkpoint_dir(run, 3)
    checkpoint.mkdir(parents=True)
    checkpoints.write_trainable(checkpoint, tiny_pipeline)
    (checkpoint / run_folder.CHECKPOINT_INFO).write_text('{"step": 3}')
    image = _write_image(tmp_path / "a.png")
    outputs = {}
    for name, model in (("checkpoint", checkpoint), ("run", run)):
        out = tmp_path / name
        result = _infer(image, "-c", "a,b", "--model", model, "-o", out, *FAST)
        assert result.exit_code == 0, result.output
        assert f"Loading the training checkpoint {checkpoint}" in result.output.replace("\n", "")
        outputs[name] = np.asarray(Image.open(out / "a_labels.png"))
    assert np.array_equal(outputs["checkpoint"], outputs["run"])


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


def test_skip_existing_needs_the_pictures_its_settings_give(tmp_path, tiny_model_dir):
    """One member writes no uncertainty maps, and its record still counts as done; a record
    whose pictures are incomplete (one deleted) is segmented again."""
    image = _write_image(tmp_path / "a.png")
    out = tmp_path / "out"
    one = ["--ensemble-size", "1", "--denoise-steps", "1", "--seed", "0"]
    for settings in (one, FAST):
        args = [image, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *settings]
        assert _infer(*args).exit_code == 0
        result = _infer(*args, "--skip-existing")
        assert result.exit_code == 0, result.output
        assert "1 done earlier with the same settings were skipped" in " ".join(
            result.output.split()
        )
    (out / "a_uncertainty_color.png").unlink()
    result = _infer(*args, "--skip-existing")
    assert "1 done with other classes or settings, or incomplete, were segmented again" in (
        " ".join(result.output.split())
    )
    assert (out / "a_uncertainty_color.png").is_file()


def test_ctrl_c_exits_130_and_says_how_to_continue(tmp_path, tiny_model_dir, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for stem in ("a", "b"):
        _write_image(images / f"{stem}.png")
    out = tmp_path / "out"
    args = [images, "-c", "a,b", "--model", tiny_model_dir, "-o", out, *FAST]
    original = SegDiffPipeline.__call__
    calls = []

    def interrupt_the_second(self, *call_args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *call_args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(SegDiffPipeline, "__call__", interrupt_the_second)
        result = _infer(*args)
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert f"Interrupted. The images finished so far are in {out}" in said
    assert f"--output {out} --skip-existing" in said and "Traceback" not in result.output
    assert (out / "a.json").is_file() and not (out / "b.json").exists()
    result = _infer(*args, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert "1 done earlier with the same settings were skipped" in " ".join(result.output.split())
