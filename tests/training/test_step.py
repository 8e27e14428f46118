"""One training step, on batches in memory: no run folder, no data loader."""

import math

import numpy as np
import torch
from accelerate import Accelerator

from segdiff import depth_coding
from segdiff.model.tiny import build_tiny_components
from segdiff.recipes import Recipe
from segdiff.training.batches import Batch
from segdiff.training.objective import Denoiser
from segdiff.training.step import TrainingStep

SMALL_UNET = {"block_out_channels": [16, 32], "norm_num_groups": 8, "attention_head_dim": 4}


def small_batch() -> Batch:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
    masks = np.stack([depth_coding.encode(sample, 3) for sample in labels])
    masks = torch.from_numpy(masks).float()[:, None].expand(-1, 3, -1, -1) / 127.5 - 1
    pixels = torch.from_numpy(rng.uniform(-1, 1, (2, 3, 16, 16))).float()
    return Batch(pixels, masks, [["sky", "tree", "road"], ["road", "sky", "tree"]])


def make_step() -> TrainingStep:
    components = build_tiny_components(seed=0, overrides={"unet": SMALL_UNET})
    return TrainingStep.from_recipe(components, Recipe(), Accelerator(mixed_precision="no"))


def trained_weights(step: TrainingStep) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in step.denoiser.state_dict().items()}


def test_a_step_updates_the_weights_and_returns_the_loss():
    step = make_step()
    before = trained_weights(step)
    loss = step([small_batch(), small_batch()])  # two micro-batches, one optimizer step
    assert math.isfinite(loss) and loss > 0
    after = trained_weights(step)
    assert not all(torch.equal(before[k], after[k]) for k in before)
    assert step.lr_scheduler.last_epoch == 1


def test_a_loss_that_is_not_finite_leaves_the_weights_untouched(monkeypatch):
    step = make_step()
    before = trained_weights(step)

    def broken_forward(self, unet_input, timesteps, embeddings):
        weight = self.cam.level_mlp[0].weight
        return unet_input[:, 4:] * weight.sum() * float("nan")

    monkeypatch.setattr(Denoiser, "forward", broken_forward)
    assert math.isnan(step([small_batch()]))
    after = trained_weights(step)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in step.denoiser.parameters())
