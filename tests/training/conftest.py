"""Fixtures of the training tests: a fast tiny recipe on the shared shapes dataset."""

from pathlib import Path

import pytest

from segdiff.recipes import Recipe, load_recipe

TINY_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny-shapes.yaml"

# A few seconds on the CPU: 32 px crops, small batches, a handful of steps.
FAST = {
    "data.resolution": "32",
    "train.batch_size": "4",
    "train.steps": "4",
    "train.checkpoint_every": "2",
    "train.log_every": "1",
    "model.vae": "null",  # pre-train a VAE here: the resume tests need its checkpoints
    "vae_pretrain.steps": "2",
    "vae_pretrain.batch_size": "4",
    "vae_pretrain.crop": "16",
    "validation.num_images": "2",
    "validation.overlays": "1",
    "model.processing_resolution": "32",
    "model.tiny.unet.block_out_channels": "[16, 32, 32]",
    "model.tiny.unet.norm_num_groups": "8",
    "model.tiny.unet.attention_head_dim": "4",
}


@pytest.fixture(scope="session")
def fast_recipe(shapes_root):
    """``fast_recipe(**overrides)``: the tiny-shapes recipe shrunk to run in seconds."""

    def make(**overrides: str) -> Recipe:
        values = {**FAST, "data.root": str(shapes_root), **overrides}
        return load_recipe(TINY_RECIPE, values)

    return make
