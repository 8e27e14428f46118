"""Every file segdiff writes gets the mode an ordinary write gives under the user's umask
(outputs are shared within a team); atomic writes used to leave them private (0600)."""

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segdiff.cli import app

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "tiny-shapes.yaml")
FAST = ["data.resolution=32", "train.batch_size=4", "train.steps=2", "train.checkpoint_every=1",
        "model.vae=null", "vae_pretrain.steps=2", "vae_pretrain.batch_size=2",
        "vae_pretrain.crop=16",
        "validation.num_images=1", "model.processing_resolution=32",
        "model.tiny.unet.block_out_channels=[16, 32, 32]",
        "model.tiny.unet.norm_num_groups=8"]  # fmt: skip


def run(*args) -> None:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_prepare_infer_eval_train_and_export_honour_the_umask(umask, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    previous = os.umask(umask)
    try:
        run("prepare", "shapes", "--out", "data", "--train-size", "8", "--val-size", "2",
            "--size", "32", "--workers", "2")  # fmt: skip
        run("infer", "data/val/images", "-c", "shapes", "-o", "infer", "--ensemble-size", "2",
            "--seed", "0")  # fmt: skip
        run("eval", "shapes", "--data", "data", "-o", "eval", "--ensemble-size", "2")
        run("train", RECIPE, "data.root=data", *FAST, "--output", "run")
        run("export", "run", "--out", "export")
    finally:
        os.umask(previous)
    modes = {}
    for path in tmp_path.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        if mode != expected:
            modes[str(path.relative_to(tmp_path))] = oct(mode)
    assert modes == {}
    for folder in ("data/val/masks", "infer", "eval", "run/checkpoints", "run/model", "export"):
        assert any((tmp_path / folder).iterdir()), folder  # each command wrote something
