"""A training run folder written by the trainer's own writers (recipe, frozen components,
checkpoints, final model, metrics), from the tiny pipeline instead of a training run."""

import copy
import shutil

import pytest
import torch

from segdiff import run_folder
from segdiff.data.writer import PreparedWriter
from segdiff.imageio import save_json
from segdiff.recipes import DataRecipe, OptimRecipe, Recipe, TrainRecipe, save_recipe
from segdiff.training import checkpoints

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
    shifted = copy.deepcopy(pipe)
    shifted.unet.conv_out.bias.data += unet_shift
    optimizer = torch.optim.AdamW(shifted.unet.parameters())
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    final = run_folder.checkpoint_dir(run, step)
    temporary = run_folder.staging_dir(final, fresh=True)
    info = {"step": step, "num_processes": 1}
    checkpoints.write_checkpoint(temporary, shifted, optimizer, lr_scheduler, None, info)
    run_folder.publish_checkpoint(temporary, final, keep=3)
    return final


@pytest.fixture(scope="session")
def prepared_meta(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    PreparedWriter(root, "shapes", "shapes", VOCABULARY)
    return root


@pytest.fixture(scope="session")
def training_run(tiny_pipeline, prepared_meta, tmp_path_factory):
    """A run with checkpoints at steps 500 and 1000 and no final model yet."""
    run = tmp_path_factory.mktemp("run")
    recipe = Recipe(
        name="tiny",
        data=DataRecipe(root=str(prepared_meta), resolution=32),
        train=TrainRecipe(steps=1000, batch_size=2),
        optim=OptimRecipe(lr=1e-4),
    )
    save_recipe(recipe, run / run_folder.RECIPE)
    checkpoints.save_frozen(run, tiny_pipeline.components)
    save_checkpoint(tiny_pipeline, run, 500, unet_shift=0.5)
    save_checkpoint(tiny_pipeline, run, 1000, unet_shift=1.0)
    save_json(METRICS, run / run_folder.METRICS)
    return run


@pytest.fixture
def finished_run(training_run, tiny_pipeline, tmp_path):
    """A copy of the run with its final model/ written."""
    run = shutil.copytree(training_run, tmp_path / "run")
    checkpoints.save_model(run, tiny_pipeline)
    return run
