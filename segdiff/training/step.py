"""One training step on batches in memory: no run folder, no data loader, no checkpoint.

`TrainingStep.from_recipe` turns pipeline components into what a step needs (frozen VAE and
text encoder in the mixed-precision dtype, UNet + CAM trainable as one `Denoiser` with the
recipe's speed settings (`segdiff.training.speed`), optimizer, LR schedule, EMA, noise
generator, and the attention loss when the recipe asks for it),
prepared by accelerate. Calling it runs one optimizer step, on batches of pixels (`Batch`,
encoded here) or of cached latents (`LatentBatch`). The training loop repeats it;
benchmarks/bench_train.py times it.
"""

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDIMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from segdiff.console import console
from segdiff.model.attention import use_few_keys_attention
from segdiff.model.text import ClassEmbedder
from segdiff.recipes import NoiseRecipe, OptimRecipe, Recipe
from segdiff.training import speed
from segdiff.training.attention import AttentionSupervision
from segdiff.training.batches import Batch, LatentBatch
from segdiff.training.objective import Denoiser, diffusion_loss

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""accelerate's mixed precision -> the dtype the frozen parts run in."""


@dataclass
class TrainingStep:
    accelerator: Accelerator
    vae: AutoencoderKL
    embedder: ClassEmbedder
    scheduler: DDIMScheduler
    denoiser: Denoiser
    """The trained UNet + CAM, as built (for EMA, saving and validation)."""
    model: torch.nn.Module
    """The denoiser as accelerate prepared it (DDP, autocast): what the loss runs."""
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel | None
    generator: torch.Generator
    """Draws the noise and timesteps; seeded per process."""
    noise: NoiseRecipe
    max_grad_norm: float
    attention: AttentionSupervision | None = None
    """The attention loss (train.attention_loss > 0), recording the UNet's cross-attention."""
    attention_loss: float | None = None
    """The last step's attention loss, unweighted, mean of all processes (None when off)."""

    @classmethod
    def from_recipe(
        cls, components: dict[str, Any], recipe: Recipe, accelerator: Accelerator
    ) -> "TrainingStep":
        """Set up ``components`` (taken over, not copied) for training as ``recipe`` says, on
        ``accelerator``'s device and mixed precision."""
        device = accelerator.device
        dtype = WEIGHT_DTYPES[accelerator.mixed_precision]
        for name in ("vae", "text_encoder"):
            components[name].requires_grad_(False).eval().to(device)
            if dtype != torch.float32:  # frozen parts run in the mixed-precision dtype
                components[name].to(dtype=dtype)
        unet = components["unet"].train().to(device)
        latent_side = recipe.data.resolution // 2 ** (
            len(components["vae"].config.block_out_channels) - 1
        )
        if speed.use_gradient_checkpointing(recipe, unet, latent_side, dtype, device):
            unet.enable_gradient_checkpointing()
        # As validation's pipeline would install it: one attention code path for the whole run.
        use_few_keys_attention(unet)
        speed.apply_speed_settings(unet, recipe.train.compile, recipe.train.channels_last)
        attention = None
        if recipe.train.attention_loss > 0:
            attention = AttentionSupervision(
                unet, recipe.train.attention_loss, recipe.train.attention_loss_layers
            )
        denoiser = Denoiser(unet, components["cam"].train()).to(device)
        optimizer = make_optimizer(denoiser, recipe.optim)
        ema = None
        if recipe.train.ema.enabled:
            ema = EMAModel(denoiser.parameters(), decay=recipe.train.ema.decay)
        seed = np.random.SeedSequence([recipe.seed, accelerator.process_index])
        generator = torch.Generator(device=device).manual_seed(int(seed.generate_state(1)[0]))
        lr_scheduler = learning_rate_schedule(optimizer, recipe)
        model, optimizer = accelerator.prepare(denoiser, optimizer)
        return cls(
            accelerator=accelerator,
            vae=components["vae"],
            embedder=ClassEmbedder(
                components["tokenizer"], components["text_encoder"], recipe.model.prompt_template
            ),
            scheduler=components["scheduler"],
            denoiser=denoiser,
            model=model,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            ema=ema,
            generator=generator,
            noise=recipe.train.noise,
            max_grad_norm=recipe.optim.max_grad_norm,
            attention=attention,
        )

    def __call__(self, micro_batches: Sequence[Batch | LatentBatch]) -> float:
        """One optimizer step, the gradients accumulated over ``micro_batches``; returns the
        mean loss of all processes. A loss that is not finite leaves the weights untouched
        (the caller decides what that means)."""
        accelerator = self.accelerator
        count = len(micro_batches)
        totals = torch.zeros(2, device=accelerator.device)  # loss, attention loss
        for index, batch in enumerate(micro_batches):
            last = index == count - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(self.model)
            with sync:
                loss, attention = self.loss(batch.to(accelerator.device))
                accelerator.backward(loss / count)
            totals += torch.stack([loss, attention]).detach() / count
        mean, attention_mean = accelerator.reduce(totals, reduction="mean").tolist()
        self.attention_loss = attention_mean if self.attention is not None else None
        if not math.isfinite(mean):
            self.optimizer.zero_grad(set_to_none=True)
            return mean
        accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.denoiser.parameters())
        return mean

    def loss(self, batch: Batch | LatentBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of one batch (on the device) and its attention part, unweighted (0 when
        the attention loss is off)."""
        image_latents, mask_latents = batch.latents(self.vae)
        embeddings = [self.embedder(names) for names in batch.classes]
        recording = self.attention.recording() if self.attention else contextlib.nullcontext()
        with recording:
            loss = diffusion_loss(
                self.model,
                self.scheduler,
                image_latents,
                mask_latents,
                embeddings,
                self.generator,
                self.noise,
            )
        if self.attention is None:
            return loss, torch.zeros_like(loss)
        none_index = self.denoiser.cam.none_token_index(max(map(len, batch.classes)))
        attention = self.attention.loss(batch.labels, none_index, mask_latents.shape[-2:])
        return loss + self.attention.weight * attention, attention


def make_optimizer(denoiser: Denoiser, optim: OptimRecipe) -> torch.optim.Optimizer:
    """AdamW (fused into one kernel per step on CUDA), or bitsandbytes' 8-bit AdamW when
    ``optim.eight_bit`` and it is installed."""
    options = {
        "lr": optim.lr,
        "betas": tuple(optim.betas),
        "eps": optim.eps,
        "weight_decay": optim.weight_decay,
    }
    if optim.eight_bit:
        try:
            import bitsandbytes
        except ImportError:
            console.print("optim.eight_bit: bitsandbytes is not installed; using AdamW")
        else:
            return bitsandbytes.optim.AdamW8bit(denoiser.parameters(), **options)
    on_cuda = next(denoiser.parameters()).is_cuda
    return torch.optim.AdamW(denoiser.parameters(), fused=on_cuda or None, **options)


def learning_rate_schedule(
    optimizer: torch.optim.Optimizer, recipe: Recipe
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over ``optim.warmup_steps``, then the recipe's schedule."""
    schedule = recipe.optim.schedule
    # diffusers' "constant" ignores the warm-up; its "constant_with_warmup" honours it.
    return get_scheduler(
        "constant_with_warmup" if schedule == "constant" else schedule,
        optimizer,
        num_warmup_steps=recipe.optim.warmup_steps,
        num_training_steps=recipe.train.steps,
    )
