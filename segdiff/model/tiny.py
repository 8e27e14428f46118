"""Tiny SD2-shaped models from config dicts, for tests and CPU training.

Nothing here is downloaded: the tokenizer is a character-level CLIP BPE written from the
256 byte symbols, and every network is built from a config and a seed. The shapes mirror
SD2 (v-prediction, scaled-linear betas, CLIP text encoder, KL VAE), only smaller.
"""

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from segdiff.errors import SegDiffInputError
from segdiff.imageio import read_json_object
from segdiff.model.cam import ContentAttentionModule
from segdiff.model.from_sd import expand_conv_in, inference_scheduler

WIDTH = 32  # text width = cross-attention width

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": 64,
        "scaling_factor": 1.0,
    },
    "unet": {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "cross_attention_dim": WIDTH,
        "norm_num_groups": 16,
    },
    "text_encoder": {
        "hidden_size": WIDTH,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "projection_dim": WIDTH,
    },
    "scheduler": {
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": "v_prediction",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
    },
}


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for the bytes 0..255."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP tokenizer: every byte, with and without end-of-word, no merges."""
    symbols = _byte_symbols()
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": i + 256 for i, symbol in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer(
            str(Path(folder) / "vocab.json"),
            str(Path(folder) / "merges.txt"),
            model_max_length=77,
        )


def tiny_configs(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict]:
    """TINY_CONFIGS with per-component overrides merged in (e.g. from a recipe)."""
    configs = copy.deepcopy(TINY_CONFIGS)
    for component, values in (overrides or {}).items():
        if component not in configs:
            raise ValueError(f"unknown tiny component {component!r}; known: {list(configs)}")
        configs[component].update(values)
    return configs


def build_tiny_stable_diffusion(
    seed: int = 0, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Randomly initialised SD2-layout components (4-channel UNet), seeded."""
    configs = tiny_configs(overrides)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **configs["text_encoder"],
    )
    return {
        "vae": AutoencoderKL(**configs["vae"]),
        "text_encoder": CLIPTextModel(text_config),
        "tokenizer": tokenizer,
        "unet": UNet2DConditionModel(**configs["unet"]),
        "scheduler": DDIMScheduler(**configs["scheduler"]),
    }


def save_tiny_stable_diffusion(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD2-layout folder (as a hub snapshot has it) to test loading from SD."""
    folder = Path(folder)
    components = build_tiny_stable_diffusion(seed)
    for name, component in components.items():
        component.save_pretrained(folder / name)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1"}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def build_tiny_components(
    seed: int = 0,
    overrides: dict[str, dict[str, Any]] | None = None,
    none_token: bool = False,
    vae: AutoencoderKL | None = None,
) -> dict[str, Any]:
    """The six components of a tiny, untrained SegDiffPipeline, laid out as from SD2.

    Unlike SD2's, the 8-channel ``conv_in`` keeps its random weights for the image latent and
    starts at zero for the mask latent (`expand_conv_in`). ``none_token`` gives the CAM its
    "none" token. A given ``vae`` (pretrained, see `load_vae`) replaces the one the configs
    describe, and the UNet takes its latent channels.
    """
    if vae is not None:
        _check_same_vae(vae, (overrides or {}).get("vae", {}))
        overrides = _with_latent_channels(overrides, vae.config.latent_channels)
    components = build_tiny_stable_diffusion(seed, overrides)
    if vae is not None:
        components["vae"] = vae
    torch.manual_seed(seed + 1)
    components["unet"] = expand_conv_in(components["unet"], mask_channels="zero")
    components["scheduler"] = inference_scheduler(components["scheduler"].config)
    components["cam"] = ContentAttentionModule(
        cross_attention_dim=components["unet"].config.cross_attention_dim, none_token=none_token
    )
    return components


BUNDLED_VAE = "bundled"
"""The word that names the bundled tiny model's VAE (``model.vae: bundled`` in a recipe)."""


def load_vae(source: str | Path) -> AutoencoderKL:
    """A pretrained VAE for a tiny model: a folder holding a diffusers AutoencoderKL
    (config.json and safetensors weights), or BUNDLED_VAE for the bundled model's."""
    from segdiff.model import BUNDLED_MODEL_DIR
    from segdiff.model.folder import check_component_folder

    folder = BUNDLED_MODEL_DIR / "vae" if str(source) == BUNDLED_VAE else Path(source)
    if not folder.is_dir():
        raise SegDiffInputError(
            f"model.vae: {source} is not a folder; give a folder holding a diffusers "
            f"AutoencoderKL (config.json and .safetensors weights) or '{BUNDLED_VAE}' for the "
            "bundled tiny model's VAE"
        )
    config = read_json_object(folder / "config.json") if (folder / "config.json").is_file() else {}
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise SegDiffInputError(
            f"model.vae: {folder} holds a {config['_class_name']}, not a VAE (AutoencoderKL)"
        )
    check_component_folder(folder, "vae")
    try:
        return AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise SegDiffInputError(f"model.vae: cannot load the VAE in {folder}: {err}") from err


def _check_same_vae(vae: AutoencoderKL, described: dict[str, Any]) -> None:
    """A recipe's model.tiny.vae may stay beside model.vae only where it describes that VAE."""
    for key, value in described.items():
        actual = vae.config.get(key)
        if (list(actual) if isinstance(actual, tuple) else actual) != value:
            raise SegDiffInputError(
                f"model.tiny.vae.{key} is {value!r}, but the VAE of model.vae has {actual!r}; "
                "remove model.tiny.vae or make it agree"
            )


def _with_latent_channels(
    overrides: dict[str, dict[str, Any]] | None, channels: int
) -> dict[str, dict[str, Any]]:
    """``overrides`` with the UNet taking and predicting ``channels`` latent channels."""
    unet = dict((overrides or {}).get("unet", {}))
    for key in ("in_channels", "out_channels"):
        if unet.get(key, channels) != channels:
            raise SegDiffInputError(
                f"model.tiny.unet.{key} is {unet[key]}, but the VAE of model.vae has {channels} "
                "latent channels; leave the UNet's channels out of the recipe"
            )
        unet[key] = channels
    return {**(overrides or {}), "unet": unet}
