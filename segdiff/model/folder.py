"""A model folder is data: what a segdiff model folder must hold, checked before diffusers
reads it.

diffusers imports whatever library and class a ``model_index.json`` names, passes every
config as arguments and allocates what they describe. A damaged or crafted folder would fail
deep inside it, or take the machine's memory, so segdiff checks first (docs/model-folder.md):

- ``model_index.json`` names a SegDiffPipeline with exactly the six components, each of a
  class segdiff saves (COMPONENTS), and the inference defaults, nothing else;
- no Python file anywhere in the folder: segdiff never runs code from a model;
- each component's config is a JSON object, each weights file a whole safetensors file;
- the networks the configs describe fit in memory, counted on torch's "meta" device, where
  nothing is allocated.
"""

import json
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segdiff.errors import SegDiffInputError
from segdiff.imageio import read_json_object

if TYPE_CHECKING:
    import torch

COMPONENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "vae": (("diffusers", "AutoencoderKL"),),
    "text_encoder": (("transformers", "CLIPTextModel"),),
    "tokenizer": (("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")),
    "unet": (("diffusers", "UNet2DConditionModel"),),
    "scheduler": (("diffusers", "DDIMScheduler"),),
    "cam": (("segdiff.model.cam", "ContentAttentionModule"),),
}
"""Each component of a segdiff model and the (library, class) entries it may have."""
CONFIG_FILES = {"scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}
"""Config file of a component when not config.json."""
WEIGHTED = ("vae", "text_encoder", "unet", "cam")
PIPELINE_CLASS = "SegDiffPipeline"


def check_model_index(index: dict[str, Any], model: str | Path) -> None:
    """The index of a segdiff model: its class, its six components, its defaults."""
    from segdiff.model.pipeline import PipelineDefaults

    if index.get("_class_name") != PIPELINE_CLASS or "cam" not in index:
        kind = index.get("_class_name", "unknown")
        raise SegDiffInputError(
            f"{model} is a {kind} folder, not a segdiff model (no 'cam' component). "
            "A Stable Diffusion 2 folder must first be fine-tuned with 'segdiff train', or "
            "loaded in Python with SegDiffPipeline.from_stable_diffusion() for an untrained model."
        )
    problems = []
    for name, allowed in COMPONENTS.items():
        entry = index.get(name)
        if not (isinstance(entry, list) and tuple(entry) in allowed):
            expected = " or ".join(json.dumps(list(pair)) for pair in allowed)
            problems.append(f'"{name}" is {json.dumps(entry)}, expected {expected}')
    defaults = {f.name: f.type for f in fields(PipelineDefaults)}
    for key, value in index.items():
        if key.startswith("_") or key in COMPONENTS:
            continue
        if key not in defaults:
            problems.append(f'"{key}" is no part of a segdiff model')
        elif not _is_default_value(key, value):
            problems.append(f'"{key}" has the invalid value {json.dumps(value)}')
    if problems:
        raise SegDiffInputError(
            f"{model}/model_index.json is not that of a segdiff model: {'; '.join(problems)}. "
            "segdiff loads only the components it saves itself."
        )


def check_model_folder(folder: Path, loaded: Collection[str] = ()) -> None:
    """Check a local model folder before diffusers reads it (see the module docstring);
    components in ``loaded`` are given as objects and not read from the folder."""
    check_model_index(read_json_object(folder / "model_index.json"), folder)
    code = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py"))
    if code:
        raise SegDiffInputError(
            f"{folder} holds Python files ({', '.join(code[:3])}); a segdiff model folder is "
            "data only, and segdiff never runs code from one. Remove them if you trust the "
            "rest."
        )
    for name in COMPONENTS:
        if name in loaded:
            continue
        if name in WEIGHTED:
            check_component_folder(folder / name, name)
        elif name != "tokenizer" or (folder / name / CONFIG_FILES[name]).exists():
            # a tokenizer may be vocab.json and merges.txt alone
            _read_config(folder / name / CONFIG_FILES[name])


def check_component_folder(folder: Path, name: str) -> None:
    """The folder of one weighted component (``vae``, ``text_encoder``, ``unet``, ``cam``): a
    config that is a JSON object, complete safetensors weights, a network that fits."""
    config_path = folder / CONFIG_FILES.get(name, "config.json")
    config = _read_config(config_path)
    _check_weights(folder)
    _check_size(name, config, config_path)


def _is_default_value(key: str, value: Any) -> bool:
    if key == "default_permute_classes":
        return isinstance(value, bool)
    if key == "prompt_template":
        return isinstance(value, str) and "{}" in value
    minimum = 0 if key == "default_processing_resolution" else 1
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SegDiffInputError(f"{path} is missing; the model folder is incomplete")
    return read_json_object(path)


def _check_weights(component: Path) -> None:
    """Every safetensors file of ``component`` opens, and there is at least one."""
    from safetensors import SafetensorError, safe_open

    files = sorted(component.glob("*.safetensors"))
    if not files:
        raise SegDiffInputError(
            f"{component} has no .safetensors weights; segdiff loads safetensors only"
        )
    for path in files:
        try:
            with safe_open(path, framework="pt") as weights:
                weights.keys()
        except (SafetensorError, OSError) as err:
            raise SegDiffInputError(
                f"{path} is not a complete safetensors file ({err}); the model folder is "
                "damaged: copy or export it again"
            ) from err


def _check_size(name: str, config: dict[str, Any], config_path: Path) -> None:
    """The network ``config`` describes, built on the meta device, fits in memory."""
    import torch

    from segdiff.memory import check_fits

    try:
        with torch.device("meta"):
            network = _build(name, config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
        raise SegDiffInputError(f"{config_path} does not describe a valid {name}: {err}") from err
    parameters = sum(p.numel() for p in network.parameters())
    check_fits(
        4 * parameters,
        torch.device("cpu"),
        f"the {name} that {config_path} describes ({parameters:,} parameters)",
        "the config does not fit its weights; copy or export the model again.",
    )


def _build(name: str, config: dict[str, Any]) -> "torch.nn.Module":
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from segdiff.model.cam import ContentAttentionModule

    if name == "text_encoder":
        return CLIPTextModel(CLIPTextConfig.from_dict(config))
    model_class = {"vae": AutoencoderKL, "unet": UNet2DConditionModel}.get(
        name, ContentAttentionModule
    )
    return model_class.from_config(config)
