"""Training speed settings: gradient checkpointing auto, torch.compile, channels-last."""

import dataclasses
import math
import shutil

import pytest
import torch
from accelerate import Accelerator

from segdiff.errors import SegDiffInputError
from segdiff.model.tiny import build_tiny_components
from segdiff.recipes import Recipe, TrainRecipe, load_recipe
from segdiff.training.speed import checkpointing_needed, use_gradient_checkpointing
from segdiff.training.step import TrainingStep

from .test_step import SMALL_UNET, small_batch, trained_weights


def _recipe(**train) -> Recipe:
    return dataclasses.replace(Recipe(), train=TrainRecipe(**train))


def _step(**train) -> TrainingStep:
    torch.manual_seed(0)
    components = build_tiny_components(seed=0, overrides={"unet": SMALL_UNET})
    return TrainingStep.from_recipe(components, _recipe(**train), Accelerator(mixed_precision="no"))


@pytest.mark.parametrize(
    ("peak", "state", "free", "needed"),
    [
        (None, 0, 80e9, True),  # the trial step ran out of memory
        (30e9, 10e9, 80e9, False),
        (60e9, 10e9, 80e9, False),  # 70 GB of 80 free: within FREE_MEMORY_SHARE (0.9)
        (65e9, 10e9, 80e9, True),  # 75 GB: over 72
    ],
)
def test_checkpointing_stays_off_while_the_trial_step_and_state_fit(peak, state, free, needed):
    assert checkpointing_needed(peak, state, free) is needed


def test_auto_is_off_on_a_cpu_and_true_false_are_kept():
    unet = build_tiny_components(seed=0, overrides={"unet": SMALL_UNET})["unet"]
    cpu = torch.device("cpu")
    for setting, expected in (("auto", False), (True, True), (False, False)):
        recipe = _recipe(gradient_checkpointing=setting)
        assert use_gradient_checkpointing(recipe, unet, 4, torch.float32, cpu) is expected
    assert _step(gradient_checkpointing=True).denoiser.unet.is_gradient_checkpointing
    assert not _step(gradient_checkpointing="auto").denoiser.unet.is_gradient_checkpointing


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.gradient_checkpointing", "sometimes", "true, false or auto"),
        ("train.compile", "partly", "true, false or regional"),
    ],
)
def test_speed_settings_take_only_their_words(tmp_path, key, value, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  kind: tiny\n")
    assert load_recipe(recipe, {key: "auto" if "checkpointing" in key else "regional"})
    with pytest.raises(SegDiffInputError, match=message):
        load_recipe(recipe, {key: value})


def test_channels_last_step_matches_the_plain_step():
    """Channels-last changes the memory layout, not the result."""
    plain, nhwc = _step(), _step(channels_last=True)
    weight = nhwc.denoiser.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.shape[-1] > 1
    losses = [step([small_batch()]) for step in (plain, nhwc)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None,
    reason="torch.compile's CPU backend (inductor) needs a C compiler, and none is installed",
)
def test_a_compiled_unet_trains_and_keeps_its_weight_names():
    """train.compile runs on a CPU too: a step of the compiled UNet updates the weights, its
    loss is the uncompiled one's, and the state dict (checkpoints, EMA) keeps its keys."""
    plain, compiled = _step(), _step(compile=True)
    assert compiled.denoiser.unet._compiled_call_impl is not None  # nn.Module.compile, in place
    assert trained_weights(compiled).keys() == trained_weights(plain).keys()
    before = trained_weights(compiled)
    losses = [step([small_batch()]) for step in (plain, compiled)]
    assert math.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=1e-3)
    after = trained_weights(compiled)
    assert not all(torch.equal(before[k], after[k]) for k in before)


def test_regional_compile_compiles_the_transformer_blocks_only():
    """Compilation itself happens at the first call (the test above runs one)."""
    unet = _step(compile="regional").denoiser.unet
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert blocks and all(block._compiled_call_impl is not None for block in blocks)
    assert unet._compiled_call_impl is None
