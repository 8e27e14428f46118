"""A fresh segdiff model from Stable Diffusion 2 (docs/method.md).

SD's UNet takes 4 latent channels; segdiff's takes 8 (image latent + noisy mask latent). The
first convolution keeps SD's weights for both halves, halved, so at step 0 the UNet sees the
average of the two latents through SD's own filters instead of a random projection. (Tiny
models built from scratch zero the mask half instead: `expand_conv_in`.)
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from segdiff.errors import SegDiffInputError
from segdiff.model.cam import ContentAttentionModule

SD2_HUB_ID = "stabilityai/stable-diffusion-2"
SD2_SUBFOLDERS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")


def expand_conv_in(
    unet: UNet2DConditionModel,
    copies: int = 2,
    mask_channels: Literal["copy", "zero"] = "copy",
) -> UNet2DConditionModel:
    """Widen ``conv_in`` to ``copies`` x its input channels (the image latent, then the mask
    latent).

    ``"copy"``: every copy gets the old weights divided by ``copies`` (SD2: at step 0 the UNet
    sees the mean of the latents through SD's own filters). ``"zero"``: the image channels
    keep the old weights and the mask channels start at zero (a UNet built from scratch:
    copies of random filters would make image and noise indistinguishable at the start).
    """
    if mask_channels not in ("copy", "zero"):
        raise ValueError(f"mask_channels must be 'copy' or 'zero', got {mask_channels!r}")
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels * copies,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        if mask_channels == "copy":
            new.weight.copy_(old.weight.repeat(1, copies, 1, 1) / copies)
        else:
            new.weight.zero_()
            new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
    return unet


def inference_scheduler(config: dict[str, Any]) -> DDIMScheduler:
    """DDIM with trailing spacing, so that even 1 step starts from the real noise level."""
    return DDIMScheduler.from_config(config, timestep_spacing="trailing")


def components_from_stable_diffusion(
    sd_name_or_path: str | Path = SD2_HUB_ID,
    torch_dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
    none_token: bool = False,
) -> dict[str, Any]:
    """Load SD2's parts (safetensors only) and add an 8-channel conv_in and a new CAM (with
    a "none" token when ``none_token``)."""
    local = _check_source(sd_name_or_path, cache_dir)
    common = {"cache_dir": cache_dir}
    weights = {**common, "use_safetensors": True, "dtype": torch_dtype}
    try:
        # No retry chatter or deprecation warnings from the hub client: a failure is one message.
        with warnings.catch_warnings(), _quiet_hub():
            warnings.simplefilter("ignore")
            unet = UNet2DConditionModel.from_pretrained(
                sd_name_or_path, subfolder="unet", **weights
            )
            vae = AutoencoderKL.from_pretrained(sd_name_or_path, subfolder="vae", **weights)
            text_encoder = CLIPTextModel.from_pretrained(
                sd_name_or_path, subfolder="text_encoder", **weights
            )
            tokenizer = CLIPTokenizer.from_pretrained(
                sd_name_or_path, subfolder="tokenizer", **common
            )
            scheduler_config = DDIMScheduler.load_config(
                sd_name_or_path, subfolder="scheduler", **common
            )
    except (OSError, ValueError) as err:
        where = "" if local else " (not in the local Hugging Face cache, nor downloadable)"
        hint = "" if Path(sd_name_or_path).is_dir() else f" {_LOCAL_FOLDER_HINT}"
        raise SegDiffInputError(
            f"cannot load Stable Diffusion from {sd_name_or_path}{where}: {err}{hint}"
        ) from err
    if unet.config.in_channels != vae.config.latent_channels:
        raise SegDiffInputError(
            f"{sd_name_or_path}: the UNet takes {unet.config.in_channels} channels, not the "
            f"VAE's {vae.config.latent_channels}; is this already a segdiff or inpainting UNet?"
        )
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        raise SegDiffInputError(
            f"{sd_name_or_path}: text encoder width {text_encoder.config.hidden_size} differs "
            f"from the UNet's cross-attention width {unet.config.cross_attention_dim}"
        )
    cam = ContentAttentionModule(
        cross_attention_dim=unet.config.cross_attention_dim, none_token=none_token
    )
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": expand_conv_in(unet),
        "scheduler": inference_scheduler(scheduler_config),
        "cam": cam.to(dtype=unet.dtype),
    }


_LOCAL_FOLDER_HINT = (
    "To train without network, point model.pretrained at a local Stable Diffusion 2 folder "
    f"with {', '.join(f'{name}/' for name in SD2_SUBFOLDERS)}: 'segdiff train RECIPE.yaml "
    "model.pretrained=/path/to/stable-diffusion-2'."
)


def _check_source(sd_name_or_path: str | Path, cache_dir: str | None) -> bool:
    """Whether SD is on this machine: a local folder, which must hold SD's subfolders, or a
    hub id in the local cache. Off the cache with the hub off (HF_HUB_OFFLINE=1) is an
    error; otherwise diffusers downloads it."""
    path = Path(sd_name_or_path)
    if path.is_dir():
        missing = [name for name in SD2_SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise SegDiffInputError(
                f"{path} is not a Stable Diffusion folder: missing {', '.join(missing)} "
                f"(expected subfolders {', '.join(SD2_SUBFOLDERS)})"
            )
        return True
    text = str(sd_name_or_path)
    if path.exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise SegDiffInputError(
            f"Stable Diffusion folder not found: {sd_name_or_path} (neither a folder nor a hub "
            "id like stabilityai/stable-diffusion-2)"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    cached = all(
        isinstance(try_to_load_from_cache(text, f"{name}/{config}", cache_dir=cache_dir), str)
        for name, config in _SD2_CONFIGS.items()
    )
    if not cached and constants.HF_HUB_OFFLINE:
        raise SegDiffInputError(
            f"{sd_name_or_path} is not in the local Hugging Face cache "
            f"({cache_dir or constants.HF_HUB_CACHE}), and downloads are off (HF_HUB_OFFLINE=1). "
            f"Download it once where there is network ('hf download {sd_name_or_path}'), or: "
            f"{_LOCAL_FOLDER_HINT}"
        )
    return cached


_SD2_CONFIGS = {
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
    "unet": "config.json",
    "scheduler": "scheduler_config.json",
}


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub logs errors only, for the duration."""
    from huggingface_hub.utils import logging as hub_logging

    previous = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(previous)
