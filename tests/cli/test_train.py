import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from segdiff.cli import app
from segdiff.errors import SegDiffInputError
from segdiff.run_folder import resolve_run

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "tiny-shapes.yaml")
FAST = [
    "data.resolution=32",
    "train.batch_size=4",
    "train.steps=2",
    "train.checkpoint_every=1",
    "model.vae=null",  # pre-train a VAE here: the resume tests need its checkpoints
    "vae_pretrain.steps=1",
    "vae_pretrain.batch_size=2",
    "vae_pretrain.crop=16",
    "validation.num_images=1",
    "model.processing_resolution=32",
    "model.tiny.unet.block_out_channels=[16, 32, 32]",
    "model.tiny.unet.norm_num_groups=8",
]

runner = CliRunner()


def assert_input_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_bad_recipe_and_overrides_exit_2(tmp_path):
    assert_input_error(runner.invoke(app, ["train", str(tmp_path / "nope.yaml")]), "not found")
    assert_input_error(
        runner.invoke(app, ["train", RECIPE, "optim.lrr=1"]), "unknown recipe key(s) optim.lrr"
    )
    assert_input_error(runner.invoke(app, ["train", RECIPE, "optim.lr"]), "KEY=VALUE")
    assert_input_error(runner.invoke(app, ["train", RECIPE]), "no data.root")
    assert_input_error(
        runner.invoke(app, ["train", RECIPE, f"data.root={tmp_path}"]),
        "not a prepared segdiff dataset",
    )


def test_resume_needs_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_input_error(
        runner.invoke(app, ["train", RECIPE, "--resume", "latest"]), "no run of 'tiny-shapes'"
    )
    assert_input_error(
        runner.invoke(app, ["train", RECIPE, "--resume", str(tmp_path)]), "not a checkpoint"
    )


def test_run_folders_are_numbered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_run("r", None, None) == (Path("runs/train/r"), None)
    Path("runs/train/r").mkdir(parents=True)
    Path("runs/train/r-2").mkdir()
    assert resolve_run("r", None, None) == (Path("runs/train/r-3"), None)
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "recipe.yaml").write_text("{}")
    with pytest.raises(SegDiffInputError, match="already holds a training run"):
        resolve_run("r", tmp_path / "out", None)


def test_train_then_resume_latest(shapes_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", RECIPE, f"data.root={shapes_root}", *FAST])
    assert result.exit_code == 0, result.output
    run = Path("runs/train/tiny-shapes")
    assert (run / "model" / "model_index.json").is_file()
    assert (run / "checkpoints" / "step-00000002").is_dir()

    result = runner.invoke(
        app,
        ["train", RECIPE, f"data.root={shapes_root}", *FAST, "train.steps=3", "--resume", "latest"],
    )
    assert result.exit_code == 0, result.output
    assert "Resuming from runs/train/tiny-shapes/checkpoints/step-00000002" in result.output
    info = json.loads((run / "checkpoints" / "step-00000003" / "checkpoint.json").read_text())
    assert info["step"] == 3
    assert not Path("runs/train/tiny-shapes-2").exists()


def test_two_cpu_processes_keep_identical_weights(shapes_root, tmp_path):
    """accelerate launch, 2 processes over gloo (no GPU here, so --multi_gpu falls back to
    the CPU): the same command, one run folder, identical weights on both ranks."""
    run = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(port), "-m", "segdiff"]
    train_args = ["train", RECIPE, f"data.root={shapes_root}", *FAST, "train.batch_size=2"]
    command = [*launch, *train_args, "--output", str(run)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for step in (1, 2):
        info = json.loads(
            (run / "checkpoints" / f"step-{step:08d}" / "checkpoint.json").read_text()
        )
        assert info["num_processes"] == 2
        assert len(info["weights_sha256"]) == 2
        assert info["weights_sha256"][0] == info["weights_sha256"][1]
        assert info["samples_seen"] == step * 2 * 2
        state = run / "checkpoints" / f"step-{step:08d}" / "training_state"
        assert (state / "rng-0.safetensors").is_file() and (state / "rng-1.safetensors").is_file()
    assert (run / "model" / "model_index.json").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=.nan"], "optim.lr must be a finite number, got nan"),
        (["optim.betas=[0.9, .inf]"], "optim.betas must be a finite number"),
        (["seed=100000000000000000000000"], "seed must be between 0 and 4294967295"),
        (["name=../../../x"], "name must be one folder name"),
        (["name=a/b"], "name must be one folder name"),
    ],
)
def test_recipe_values_that_cannot_train_exit_2(tmp_path, monkeypatch, overrides, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", RECIPE, f"data.root={tmp_path}", *overrides])
    assert_input_error(result, message)
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "x").exists()


def test_a_run_name_from_a_recipe_file_cannot_leave_runs_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "escape.yaml"
    recipe.write_text(f"base: {RECIPE}\nname: ../../../x\n")
    result = runner.invoke(app, ["train", str(recipe), f"data.root={tmp_path}"])
    assert_input_error(result, "name must be one folder name")


def test_tiny_overrides_that_cannot_fit_are_refused_before_allocating(shapes_root, tmp_path):
    huge = "model.tiny.vae.block_out_channels=[100000000, 100000000, 100000000]"
    result = runner.invoke(
        app, ["train", RECIPE, f"data.root={shapes_root}", *FAST, huge, "-o", str(tmp_path / "r")]
    )
    assert_input_error(result, "the tiny model of the recipe")
    assert "lower the widths in model.tiny" in " ".join(result.output.split())
    short = "model.tiny.vae.block_out_channels=[32, 32]"  # three blocks need three widths
    result = runner.invoke(app, ["train", RECIPE, f"data.root={shapes_root}", *FAST, short])
    assert_input_error(result, "model.tiny overrides do not build a model")


def test_sd2_offline_and_not_cached_says_how_to_use_a_local_folder(
    shapes_root, tmp_path, monkeypatch
):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    result = runner.invoke(
        app,
        ["train", str(Path(RECIPE).parent / "sd2-cocostuff.yaml"), f"data.root={shapes_root}",
         "validation.num_images=0", "train.mixed_precision=no", "-o", str(tmp_path / "r")],
    )  # fmt: skip
    assert_input_error(result, "is not in the local Hugging Face cache")
    text = " ".join(result.output.split())
    assert "model.pretrained=/path/to/stable-diffusion-2" in text and "Warning" not in text
    result = runner.invoke(
        app, ["train", RECIPE, f"data.root={shapes_root}", *FAST, "model.kind=stable-diffusion",
              f"model.pretrained={tmp_path / 'no-such-sd2'}", "-o", str(tmp_path / "r")],
    )  # fmt: skip
    assert_input_error(result, "Stable Diffusion folder not found")


def test_out_of_memory_in_training_says_what_to_lower(tmp_path, monkeypatch):
    def run_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("segdiff.training.loop.train", run_out)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", RECIPE, f"data.root={tmp_path}"])
    assert_input_error(result, "out of memory (CUDA out of memory.")
    assert "train.batch_size" in " ".join(result.output.split())


def test_an_output_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "taken").write_text("x")
    result = runner.invoke(app, ["train", RECIPE, "-o", str(tmp_path / "taken")])
    assert_input_error(result, "is a file; give a folder")


def test_masks_off_their_levels_stop_training(shapes_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(shapes_root, data)
    for mask_path in (data / "train" / "masks").iterdir():
        mask = np.asarray(Image.open(mask_path)).astype(np.int64)
        Image.fromarray(((mask + 40) % 256).astype(np.uint8)).save(mask_path)
    result = runner.invoke(
        app, ["train", RECIPE, f"data.root={data}", *FAST, "-o", str(tmp_path / "r")]
    )
    assert_input_error(result, "have gray values off the levels of its")


def test_ctrl_c_before_the_first_checkpoint_is_no_dead_end(shapes_root, tmp_path, monkeypatch):
    """Interrupted before any checkpoint, a run says how to continue; the same command, with
    or without --resume latest, then continues it (it used to refuse both ways)."""
    from segdiff.training import checkpoints

    run = tmp_path / "run"
    args = ["train", RECIPE, f"data.root={shapes_root}", *FAST, "--output", str(run)]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(checkpoints, "write_checkpoint", ctrl_c)
        result = runner.invoke(app, args)
        assert result.exit_code == 130, result.output
        said = " ".join(result.output.split())
        assert "Interrupted. Continue the run with: segdiff train" in said
        assert f"--output {run} --resume latest" in said
        assert "Traceback" not in result.output
        result = runner.invoke(app, args)  # the same command again, interrupted again
        assert result.exit_code == 130, result.output
    result = runner.invoke(app, [*args, "--resume", "latest"])
    assert result.exit_code == 0, result.output
    assert (run / "model" / "model_index.json").is_file()
    assert not list(run.rglob(".tmp-*"))


def test_disk_full_while_checkpointing_keeps_the_run(shapes_root, tmp_path, monkeypatch):
    """torch.save's way of saying ENOSPC ("unexpected pos"): exit 2 naming the place, the
    earlier checkpoint kept, the partial one removed, and the run resumes."""
    import torch

    run = tmp_path / "run"
    args = ["train", RECIPE, f"data.root={shapes_root}", *FAST, "--output", str(run)]
    original = torch.save

    def full_at_step_2(obj, path, *rest, **kwargs):
        if "step-00000002" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576")
        return original(obj, path, *rest, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", full_at_step_2)
        result = runner.invoke(app, args)
    assert_input_error(result, "disk full at")
    assert f"--output {run} --resume latest" in " ".join(result.output.split())
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000001"]
    result = runner.invoke(app, [*args, "--resume", "latest"])
    assert result.exit_code == 0, result.output
    assert "Resuming from" in result.output
    assert not list(run.rglob(".tmp-*"))
