"""Pre-training a tiny VAE, which has no pretrained weights to borrow.

The VAE learns to reconstruct both the RGB images and the depth-coded masks of the training
set (masks weigh more: a mask must decode to the right gray level, an image only needs to stay
recognisable), with a small KL term that keeps the latents bounded. Its ``scaling_factor`` is
then set to 1 / std of the latents, so the diffusion model sees unit-variance latents as SD's
do, and the VAE is frozen for the rest of training.
"""

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_scheduler

from segdiff.recipes import VaePretrainRecipe
from segdiff.training.batches import Batch


def vae_loss(vae: AutoencoderKL, batch: Batch, recipe: VaePretrainRecipe) -> torch.Tensor:
    inputs = torch.cat([batch.pixels, batch.masks])
    posterior = vae.encode(inputs).latent_dist
    decoded = vae.decode(posterior.sample()).sample
    images, masks = decoded.chunk(2)
    reconstruction = F.mse_loss(images, batch.pixels) + recipe.mask_weight * F.mse_loss(
        masks.mean(dim=1), batch.masks[:, 0]
    )
    return reconstruction + recipe.kl_weight * posterior.kl().mean()


def vae_optimizer(
    vae: AutoencoderKL, recipe: VaePretrainRecipe
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a cosine schedule (a tenth of the steps of warm-up)."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule = get_scheduler(
        "cosine", optimizer, num_warmup_steps=recipe.steps // 10, num_training_steps=recipe.steps
    )
    return optimizer, schedule


def pretrain_vae(
    vae: AutoencoderKL,
    batches,
    recipe: VaePretrainRecipe,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    start_step: int = 0,
    on_step=None,
) -> float:
    """Train ``vae`` from ``start_step`` to ``recipe.steps``, then freeze it with a
    unit-variance scaling factor. ``batches`` yields Batch objects from ``start_step`` on;
    ``on_step(step, loss)`` runs after each step (progress, checkpoints). Returns the scaling
    factor."""
    vae.train().requires_grad_(True)
    iterator = iter(batches)
    for step in range(start_step, recipe.steps):
        loss = vae_loss(vae, next(iterator), recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step + 1, loss.item())
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = []
        for _ in range(4):
            batch = next(iterator)
            inputs = torch.cat([batch.pixels, batch.masks])
            latents.append(vae.encode(inputs).latent_dist.mode())
        scaling_factor = float(1.0 / torch.cat(latents).std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scaling_factor)
    return scaling_factor
