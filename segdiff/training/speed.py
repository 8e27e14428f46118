"""Training speed settings of a recipe: gradient checkpointing, torch.compile, channels-last.

None of them changes what is computed, only how fast and in how much memory:

- ``train.gradient_checkpointing``: true, false, or ``auto``: off when one forward and backward
  of the recipe's batch fits in free GPU memory without it (measured once, before training),
  on otherwise. Off on a CPU, where memory is the host's and recomputing only costs time.
- ``train.compile``: false, true (torch.compile of the whole UNet, in place, so its weights
  keep their names) or ``regional`` (only its repeated transformer blocks: quicker to start).
- ``train.channels_last``: the UNet's weights and activations in NHWC, which tensor cores
  and oneDNN prefer for convolutions.
"""

import torch
from diffusers import UNet2DConditionModel

from segdiff.console import console
from segdiff.recipes import Recipe

CHECKPOINTING_AUTO = "auto"
COMPILE_REGIONAL = "regional"
FREE_MEMORY_SHARE = 0.9
"""Checkpointing stays off only when the measured peak uses at most this share of free memory
(allocator fragmentation and the data pipeline need the rest)."""


def checkpointing_needed(peak_bytes: float | None, state_bytes: float, free_bytes: float) -> bool:
    """Whether training needs gradient checkpointing: a trial step without it ran out of
    memory (``peak_bytes`` None), or its peak plus the optimizer and EMA state not yet
    allocated (``state_bytes``) overflows FREE_MEMORY_SHARE of ``free_bytes``."""
    return peak_bytes is None or peak_bytes + state_bytes > FREE_MEMORY_SHARE * free_bytes


def measure_step_peak(
    unet: UNet2DConditionModel,
    batch_size: int,
    latent_side: int,
    context_tokens: int,
    dtype: torch.dtype,
    device: torch.device,
) -> float | None:
    """Peak CUDA bytes of one UNet forward and backward of a batch of random inputs without
    checkpointing (None: out of memory). The gradients it made are dropped."""
    channels = unet.config.in_channels
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    try:
        sample = torch.randn(batch_size, channels, latent_side, latent_side, device=device)
        context = torch.randn(
            batch_size, context_tokens, unet.config.cross_attention_dim, device=device
        )
        timesteps = torch.randint(0, 1000, (batch_size,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            output = unet(sample, timesteps, encoder_hidden_states=context).sample
        output.float().square().mean().backward()
        return float(torch.cuda.max_memory_allocated(device) - start)
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        unet.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def use_gradient_checkpointing(
    recipe: Recipe,
    unet: UNet2DConditionModel,
    latent_side: int,
    dtype: torch.dtype,
    device: torch.device,
) -> bool:
    """The recipe's ``train.gradient_checkpointing``, with ``auto`` decided here: off on a
    CPU; on CUDA from a trial step without it (`measure_step_peak`) and free memory."""
    setting = recipe.train.gradient_checkpointing
    if setting != CHECKPOINTING_AUTO:
        return bool(setting)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    train = recipe.train
    peak = measure_step_peak(
        unet, train.batch_size, latent_side, recipe.data.max_classes, dtype, device
    )
    # fp32 AdamW moments (2 copies of the weights) and EMA weights, allocated later
    copies = 3 if train.ema.enabled else 2
    state_bytes = copies * 4 * sum(p.numel() for p in unet.parameters())
    needed = checkpointing_needed(peak, state_bytes, free)
    seen = "ran out of memory" if peak is None else f"peaked at {peak / 2**30:.1f} GiB"
    console.print(
        f"train.gradient_checkpointing auto: a trial step without it {seen} with "
        f"{free / 2**30:.1f} GiB free; checkpointing {'on' if needed else 'off'}",
        markup=False,
    )
    return needed


def apply_speed_settings(
    unet: UNet2DConditionModel, compile_setting: bool | str, channels_last: bool
) -> None:
    """Channels-last and torch.compile, in place (the UNet's state dict keeps its keys)."""
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile_setting == COMPILE_REGIONAL:
        unet.compile_repeated_blocks()
    elif compile_setting:
        unet.compile()
