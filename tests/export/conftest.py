"""A training run folder built by hand from the tiny pipeline, following the trainer's
contract: recipe.yaml, frozen/ components, checkpoints/step-N/ with unet, cam, model_index.json,
training_state/ and checkpoint.json, and the run's metrics.json."""

import json
import shutil

import pytest
import torch
import yaml

VOCABULARY = ["background", "circle", "square"]
METRICS = {
    "step": 1000,
    "mIoU": 61.25,
    "pixel_accuracy": 90.5,
    "mean_accuracy": 70.0,
    "fwIoU": 80.0,
    "per_class": {"background": 88.0, "circle": 55.5, "square": 40.25},
}


def save_checkpoint(pipe, run, step, unet_shift):
    """A checkpoint whose UNet differs from the source by ``unet_shift`` on conv_out's bias,
    so a test can tell which checkpoint an export holds."""
    folder = run / "checkpoints" / f"step-{step:08d}"
    pipe.unet.conv_out.bias.data += unet_shift
    pipe.unet.save_pretrained(folder / "unet")
    pipe.unet.conv_out.bias.data -= unet_shift
    pipe.cam.save_pretrained(folder / "cam")
    pipe.save_config(folder)
    (folder / "training_state").mkdir()
    torch.save({"optimizer": torch.zeros(3)}, folder / "training_state" / "optimizer.bin")
    (folder / "checkpoint.json").write_text(json.dumps({"step": step}))
    return folder


@pytest.fixture(scope="session")
def prepared_meta(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    meta = {
        "format_version": 1,
        "dataset": "shapes",
        "benchmark": "shapes",
        "vocabulary": VOCABULARY,
        "splits": {"train": 4},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def run_folder(tiny_pipeline, prepared_meta, tmp_path_factory):
    """A run with checkpoints at steps 500 and 1000 and no final model yet."""
    run = tmp_path_factory.mktemp("run")
    recipe = {
        "name": "tiny",
        "seed": 0,
        "model": {"kind": "tiny"},
        "data": {"root": str(prepared_meta), "resolution": 32},
        "train": {"steps": 1000, "batch_size": 2, "ema": {"enabled": False}},
        "optim": {"lr": 1e-4},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        getattr(tiny_pipeline, name).save_pretrained(run / "frozen" / name)
    save_checkpoint(tiny_pipeline, run, 500, unet_shift=0.5)
    save_checkpoint(tiny_pipeline, run, 1000, unet_shift=1.0)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    return run


@pytest.fixture
def finished_run(run_folder, tiny_model_dir, tmp_path):
    """A copy of the run with its final model/ written."""
    run = shutil.copytree(run_folder, tmp_path / "run")
    shutil.copytree(tiny_model_dir, run / "model")
    return run
