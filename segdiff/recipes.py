"""Training recipes: YAML files with ``base:`` inheritance on an OmegaConf structured config.

The schema is the dataclasses below (a new setting is one field). A recipe file may name
another with ``base: other.yaml`` (relative to its own folder); the base is applied first and
the file's keys over it, nested mappings key by key. Command-line overrides
(``optim.lr=1e-5``) come last, their values read as YAML scalars. OmegaConf checks every key
and converts every value to its field's type, so a typo never trains silently with a default;
its errors are reworded here into a SegDiffInputError that names the key and what it takes.
Ranges and combinations the types cannot express are checked after.
"""

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf, flag_override
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    OmegaConfBaseException,
    ValidationError,
)

from segdiff.errors import SegDiffInputError
from segdiff.imageio import save_text
from segdiff.inference import MAX_SEED
from segdiff.model.from_sd import SD2_HUB_ID
from segdiff.model.pipeline import DEFAULTS, PipelineDefaults
from segdiff.model.tiny import TINY_CONFIGS


@dataclass
class ModelRecipe:
    """Where the networks come from, and the inference defaults saved with the trained model."""

    kind: Literal["tiny", "stable-diffusion"] = "tiny"
    pretrained: str = SD2_HUB_ID
    """Stable Diffusion 2 folder or hub id (kind stable-diffusion)."""
    tiny: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Overrides of segdiff.model.tiny.TINY_CONFIGS per component (kind tiny)."""
    vae: str | None = None
    """kind tiny: a pretrained VAE used frozen instead of building and pre-training one (as
    SegDiff starts from SD2's VAE): a folder holding a diffusers AutoencoderKL (config.json
    and safetensors weights), or "bundled" for the bundled tiny model's VAE. The UNet takes
    its latent channels; vae_pretrain.steps must be 0, and model.tiny.vae, if given, must
    agree with its config."""
    none_token: bool = False
    """Give the CAM a learned "none" token after the class tokens, so that cross-attention has
    somewhere to look for pixels of no listed class (docs/method.md)."""
    prompt_template: str = DEFAULTS.prompt_template
    denoising_steps: int = DEFAULTS.default_denoising_steps
    ensemble_size: int = DEFAULTS.default_ensemble_size
    processing_resolution: int = DEFAULTS.default_processing_resolution
    max_classes_per_pass: int = DEFAULTS.max_classes_per_pass
    permute_classes: bool = DEFAULTS.default_permute_classes
    """Saved as the model's default_permute_classes: ensemble members after the first see
    the classes in their own random order."""

    def pipeline_defaults(self) -> PipelineDefaults:
        """The inference settings the trained model is saved with."""
        return PipelineDefaults(
            prompt_template=self.prompt_template,
            default_denoising_steps=self.denoising_steps,
            default_ensemble_size=self.ensemble_size,
            default_processing_resolution=self.processing_resolution,
            max_classes_per_pass=self.max_classes_per_pass,
            default_permute_classes=self.permute_classes,
        )


@dataclass
class VaePretrainRecipe:
    """Train the VAE first (a tiny VAE has no pretrained weights); 0 steps keeps it as built."""

    steps: int = 0
    batch_size: int = 16
    crop: int = 0
    """Side of the crops it trains on (0: data.resolution); the VAE is fully convolutional,
    and small crops make pre-training cheap."""
    lr: float = 1e-3
    kl_weight: float = 1e-6
    mask_weight: float = 2.0
    """Weight of the mask reconstruction loss relative to the image one: masks must decode
    to the right gray level, images only need to be recognisable."""


@dataclass
class DataRecipe:
    root: str | None = None
    """Prepared dataset folder (the output of ``segdiff prepare``)."""
    train_split: str = "train"
    val_split: str = "val"
    resolution: int = 768
    """Side of the square training crops, in pixels."""
    scale: list[float] = field(default_factory=lambda: [1.0, 1.5])
    """Random scale range; 1 makes the short image side equal to ``resolution``."""
    hflip: bool = True
    max_negatives: int = 5
    """Up to this many absent vocabulary classes join each sample's class list."""
    min_negatives: int = 0
    """At least this many (as room under max_classes allows)."""
    max_classes: int = 32
    drop_present: float = 0.0
    """Probability that a class present in the crop is left out of its list, its pixels
    coded "none": teaches the model to leave pixels of unlisted classes empty, which the
    chunked decoding of large vocabularies relies on."""
    made_up_negatives: int = 0
    """Up to this many made-up names (random letters) join each class list as negatives, as
    room allows. A name that no training image shows is what a user's long class list is
    mostly made of; these teach the model to leave such names empty (two-pass decoding
    relies on it). The dataset's own classes teach that only for names it has seen."""
    workers: int = 0
    """DataLoader worker processes (0 loads in the training process)."""
    cache_variants: int = 0
    """With V > 0, the frozen VAE encodes V augmented variants of every training image once,
    before training, and kept in memory; each sample is then one of them, picked and flipped
    on the latent grid by (seed, epoch, index). 0 encodes every sample as it is drawn."""


@dataclass
class NoiseRecipe:
    multires_iterations: int = 0
    """Multi-resolution (pyramid) noise levels added to the Gaussian noise; 0 turns it off."""
    multires_discount: float = 0.3
    min_timestep: int = 0
    max_timestep: int = 999


@dataclass
class EmaRecipe:
    enabled: bool = False
    decay: float = 0.999


@dataclass
class TrainRecipe:
    steps: int = 20000
    """Optimizer steps."""
    batch_size: int = 4
    """Samples per process and micro-batch."""
    gradient_accumulation: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool | str = False
    """true, false, or auto: off when a trial step without it fits in free GPU memory
    (segdiff/training/speed.py)."""
    compile: bool | str = False
    """torch.compile the UNet: true (whole), regional (its transformer blocks, quicker to
    start) or false."""
    channels_last: bool = False
    """The UNet in channels-last (NHWC) memory format."""
    checkpoint_every: int = 1000
    checkpoint_limit: int = 3
    """Checkpoints kept; older ones are deleted."""
    log_every: int = 10
    ema: EmaRecipe = field(default_factory=EmaRecipe)
    noise: NoiseRecipe = field(default_factory=NoiseRecipe)
    attention_loss: float = 0.0
    """Weight of the attention loss: each cross-attention query's head-averaged attention
    against the class layout of its cell (pixels of no listed class: the CAM's none token,
    if it has one). 0 turns it off."""
    attention_loss_layers: Literal["all", "top"] = "all"
    """Cross-attention layers the attention loss averages over: all, or those at the finest
    resolution only."""


@dataclass
class OptimRecipe:
    lr: float = 3e-5
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    eight_bit: bool = False
    """bitsandbytes 8-bit AdamW when importable (plain AdamW otherwise, with a warning)."""
    warmup_steps: int = 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning-rate schedule after the warm-up."""
    max_grad_norm: float = 1.0


@dataclass
class ValidationRecipe:
    every: int = 1000
    """Validate every N steps and at the end; 0 only at the end."""
    num_images: int = 16
    """Size of the validation subset (the first N images of the split)."""
    denoising_steps: int | None = None
    """None: the model's defaults (model.denoising_steps / ensemble_size)."""
    ensemble_size: int | None = None
    overlays: int = 4
    """Sample overlays logged to TensorBoard."""


@dataclass
class Recipe:
    name: str = ""
    """Run name (default: the recipe file's stem); runs go to runs/train/<name>."""
    seed: int = 0
    model: ModelRecipe = field(default_factory=ModelRecipe)
    vae_pretrain: VaePretrainRecipe = field(default_factory=VaePretrainRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    validation: ValidationRecipe = field(default_factory=ValidationRecipe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read a recipe file (with its bases), apply ``key.path=value`` overrides, validate."""
    path = Path(path)
    config = OmegaConf.structured(Recipe(name=path.stem))
    for data in _read_with_bases(path, chain=()):
        for key, value in _leaves(data):
            if value is None and isinstance(OmegaConf.select(config, key), DictConfig):
                continue  # an empty section ("train:" with nothing under it)
            _update(config, key, value)
    for key, text in (overrides or {}).items():
        if not all(key.split(".")):
            raise SegDiffInputError(f"override key {key!r} is not a dotted path like optim.lr")
        value = _parse_scalar(key, text)
        if isinstance(value, bool) and isinstance(OmegaConf.select(config, key), str):
            value = text.strip()  # YAML reads "no" as false: train.mixed_precision=no
        _update(config, key, value)
    try:
        recipe = OmegaConf.to_object(config)
    except OmegaConfBaseException as err:  # e.g. a "${...}" that OmegaConf cannot resolve
        raise SegDiffInputError(_explain(err, None)) from None
    _check_values(recipe)
    return recipe


def save_recipe(recipe: Recipe, dest: str | Path) -> None:
    """Write the resolved recipe (loadable again with load_recipe), atomically."""
    save_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), dest)


def same_recipe(saved: str | Path, recipe: Recipe) -> bool:
    """Whether ``saved`` (written by `save_recipe`) holds exactly ``recipe``."""
    try:
        text = Path(saved).read_text(encoding="utf-8")
        return yaml.safe_load(text) == yaml.safe_load(yaml.safe_dump(recipe.to_dict()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> list[dict[str, Any]]:
    """The mappings of ``path``'s base chain and of ``path`` itself, to apply in this order.
    Bases lose their ``name``: a run is named after the recipe given."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise SegDiffInputError(f"recipe bases form a cycle: {cycle}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise SegDiffInputError(f"recipe file not found: {path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SegDiffInputError(f"cannot read recipe {path}: {err}") from err
    except yaml.YAMLError as err:
        raise SegDiffInputError(f"recipe {path} is not valid YAML: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SegDiffInputError(
            f"recipe {path} must be a YAML mapping of keys to values, got {type(data).__name__}"
        )
    base = data.pop("base", None)
    if base is None:
        return [data]
    if not isinstance(base, str):
        raise SegDiffInputError(f"recipe {path}: 'base' must be a file path, got {base!r}")
    inherited = _read_with_bases(path.parent / base, (*chain, path))
    for mapping in inherited:
        mapping.pop("name", None)
    return [*inherited, data]


def _update(config: DictConfig, key: str, value: Any) -> None:
    """Set a dotted key, merging mappings. A true/false field takes YAML's true and false
    only (OmegaConf's strict mode): its default conversion would read 1 or "on" as true."""
    strict = isinstance(OmegaConf.select(config, key), bool)
    try:
        with flag_override(config, "convert", False if strict else None):
            OmegaConf.update(config, key, value, merge=True)
    except OmegaConfBaseException as err:
        raise SegDiffInputError(_explain(err, value)) from None


def _leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value that is not itself a non-empty mapping. Applied
    one by one, nested mappings merge key by key, and an error names the full key."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _parse_scalar(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SegDiffInputError(f"override {key}={text!r} is not a valid YAML value") from err


def _explain(err: OmegaConfBaseException, given: Any) -> str:
    """OmegaConf's error as one sentence naming the recipe key and what it takes; ``given``
    is the value being set, for errors that do not name the offending value."""
    key = getattr(err, "full_key", None) or "the recipe"
    parent = getattr(err, "object_type", None)
    if isinstance(err, ConfigKeyError | ConfigAttributeError) and is_dataclass(parent):
        section = key.rpartition(".")[0] or "the recipe"
        fields = ", ".join(f.name for f in dataclasses.fields(parent))
        return f"unknown recipe key(s) {key}; {section} takes: {fields}"
    expected = _expected_type(err) if isinstance(err, ValidationError | ConfigTypeError) else None
    if expected is None:
        return f"recipe key {key}: {str(err.msg).splitlines()[0]}"
    value = getattr(err, "value", None)
    value = given if value is None else value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, dict) and not _is_mapping(expected):
        return f"recipe key {key} holds a value, not a section"
    return f"recipe key {key} must be {_describe(expected)}, got {value!r}"


def _expected_type(err: OmegaConfBaseException) -> Any:
    """The type hint of the key that failed: a dataclass field or section, a list item, a
    mapping value; None when the error is about something else."""
    parent, ref = getattr(err, "object_type", None), getattr(err, "ref_type", None)
    if is_dataclass(parent):
        if getattr(err, "key", None) is None:  # the section itself
            return parent
        hints = typing.get_type_hints(parent)
        return hints.get(err.key)
    if typing.get_origin(ref) in (list, dict):
        return typing.get_args(ref)[-1]
    return None


def _is_mapping(hint: Any) -> bool:
    return is_dataclass(hint) or typing.get_origin(hint) is dict


def _describe(hint: Any) -> str:
    """A type hint in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return f"{_describe(inner)} or null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return "a list"
    if origin is dict and typing.get_origin(args[1]) is dict:
        return "a mapping of component name to settings"
    if origin is dict or is_dataclass(hint):
        return "a mapping"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    return names.get(hint, str(hint))


def _is_file_name(name: str) -> bool:
    """A single path component: no separator, not empty, "." or "..", no NUL."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and name == name.strip()
    )


def _check_values(recipe: Recipe) -> None:
    """Ranges and combinations the types alone do not catch."""
    problems = []
    positive = {
        "train.steps": recipe.train.steps,
        "train.batch_size": recipe.train.batch_size,
        "train.gradient_accumulation": recipe.train.gradient_accumulation,
        "train.checkpoint_every": recipe.train.checkpoint_every,
        "train.checkpoint_limit": recipe.train.checkpoint_limit,
        "train.log_every": recipe.train.log_every,
        "data.max_classes": recipe.data.max_classes,
        "vae_pretrain.batch_size": recipe.vae_pretrain.batch_size,
        "model.denoising_steps": recipe.model.denoising_steps,
        "model.ensemble_size": recipe.model.ensemble_size,
        "model.max_classes_per_pass": recipe.model.max_classes_per_pass,
        "optim.lr": recipe.optim.lr,
    }
    problems += [
        f"{key} must be positive (got {value})" for key, value in positive.items() if value <= 0
    ]
    non_negative = {
        "seed": recipe.seed,
        "vae_pretrain.steps": recipe.vae_pretrain.steps,
        "vae_pretrain.crop": recipe.vae_pretrain.crop,
        "data.max_negatives": recipe.data.max_negatives,
        "data.min_negatives": recipe.data.min_negatives,
        "data.workers": recipe.data.workers,
        "data.cache_variants": recipe.data.cache_variants,
        "data.made_up_negatives": recipe.data.made_up_negatives,
        "train.attention_loss": recipe.train.attention_loss,
        "optim.warmup_steps": recipe.optim.warmup_steps,
        "validation.every": recipe.validation.every,
        "validation.num_images": recipe.validation.num_images,
        "validation.overlays": recipe.validation.overlays,
        "train.noise.multires_iterations": recipe.train.noise.multires_iterations,
        "model.processing_resolution": recipe.model.processing_resolution,
    }
    problems += [
        f"{key} must be 0 or more (got {value})" for key, value in non_negative.items() if value < 0
    ]
    for key, value in _leaves(recipe.to_dict()):
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
            problems.append(f"{key} must be a finite number, got {value}")
    if recipe.seed > MAX_SEED:
        problems.append(f"seed must be between 0 and {MAX_SEED}, got {recipe.seed}")
    if not _is_file_name(recipe.name):
        problems.append(
            f"name must be one folder name (no '/', not '.' or '..'), got {recipe.name!r}: "
            "runs go to runs/train/<name>"
        )
    if recipe.data.resolution < 8 or recipe.data.resolution % 8:
        problems.append(f"data.resolution must be a multiple of 8, got {recipe.data.resolution}")
    if recipe.data.min_negatives > recipe.data.max_negatives:
        problems.append("data.min_negatives must not exceed data.max_negatives")
    if not 0.0 <= recipe.data.drop_present < 1.0:
        problems.append(f"data.drop_present must be in [0, 1), got {recipe.data.drop_present}")
    scale = recipe.data.scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        problems.append(f"data.scale must be [min, max] with 0 < min <= max, got {scale}")
    if len(recipe.optim.betas) != 2:
        problems.append(f"optim.betas must be two numbers, got {recipe.optim.betas}")
    if not 0.0 < recipe.train.ema.decay < 1.0:
        problems.append(f"train.ema.decay must be between 0 and 1, got {recipe.train.ema.decay}")
    noise = recipe.train.noise
    if not 0 <= noise.min_timestep <= noise.max_timestep:
        problems.append("train.noise needs 0 <= min_timestep <= max_timestep")
    if "{}" not in recipe.model.prompt_template:
        problems.append("model.prompt_template needs a '{}' slot for the class name")
    for key, value, word in (
        ("train.gradient_checkpointing", recipe.train.gradient_checkpointing, "auto"),
        ("train.compile", recipe.train.compile, "regional"),
    ):
        if isinstance(value, str) and value != word:
            problems.append(f"{key} must be true, false or {word}, got {value!r}")
    problems += _pretrained_vae_problems(recipe)
    unknown = sorted(set(recipe.model.tiny) - set(TINY_CONFIGS))
    if unknown:
        known = tuple(TINY_CONFIGS)
        problems.append(f"model.tiny has unknown components {unknown}; known: {known}")
    for value in (recipe.validation.denoising_steps, recipe.validation.ensemble_size):
        if value is not None and value < 1:
            problems.append("validation.denoising_steps and ensemble_size must be at least 1")
    if problems:
        raise SegDiffInputError("invalid recipe: " + "; ".join(problems))


def _pretrained_vae_problems(recipe: Recipe) -> list[str]:
    """model.vae replaces the tiny VAE: nothing may pre-train another. (model.tiny.vae may
    stay where it describes the same VAE; `build_tiny_components` checks that.)"""
    if recipe.model.vae is None:
        return []
    problems = []
    if recipe.model.kind != "tiny":
        problems.append("model.vae is for kind tiny (Stable Diffusion brings its own VAE)")
    if recipe.vae_pretrain.steps:
        problems.append(
            "model.vae gives a pretrained VAE, so vae_pretrain.steps must be 0 (it is "
            f"{recipe.vae_pretrain.steps}); remove one of the two"
        )
    return problems
