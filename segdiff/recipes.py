"""Training recipes: YAML files with ``base:`` inheritance, checked against a dataclass schema.

A recipe file may name another with ``base: other.yaml`` (relative to its own folder); the
base is loaded first and the file's keys are merged over it, nested mappings key by key.
Command-line overrides (``optim.lr=1e-5``) are merged last, their values read as YAML
scalars. The merged mapping must match the schema below exactly: an unknown key or a value of
the wrong type is a SegDiffInputError that names the key, so a typo never trains silently
with a default.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from segdiff.errors import SegDiffInputError
from segdiff.imageio import save_text
from segdiff.model.text import DEFAULT_PROMPT_TEMPLATE

TINY_COMPONENTS = ("vae", "unet", "text_encoder", "scheduler")


@dataclass
class ModelRecipe:
    """Where the networks come from, and the inference defaults saved with the trained model."""

    kind: Literal["tiny", "stable-diffusion"] = "tiny"
    pretrained: str = "stabilityai/stable-diffusion-2"
    """Stable Diffusion 2 folder or hub id (kind stable-diffusion)."""
    tiny: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Overrides of segdiff.model.tiny.TINY_CONFIGS per component (kind tiny)."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    denoising_steps: int = 10
    ensemble_size: int = 5
    processing_resolution: int = 768
    max_classes_per_pass: int = 32


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
    workers: int = 0
    """DataLoader worker processes (0 loads in the training process)."""


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
    gradient_checkpointing: bool = False
    checkpoint_every: int = 1000
    checkpoint_limit: int = 3
    """Checkpoints kept; older ones are deleted."""
    log_every: int = 10
    ema: EmaRecipe = field(default_factory=EmaRecipe)
    noise: NoiseRecipe = field(default_factory=NoiseRecipe)


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
    merged = _read_with_bases(path, chain=())
    merged.setdefault("name", path.stem)
    for key, text in (overrides or {}).items():
        _set_dotted(merged, key, _parse_scalar(key, text))
    recipe = _build(Recipe, merged, where="")
    _check_values(recipe)
    return recipe


def save_recipe(recipe: Recipe, dest: str | Path) -> None:
    """Write the resolved recipe (loadable again with load_recipe), atomically."""
    save_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), dest)


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
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
        return data
    if not isinstance(base, str):
        raise SegDiffInputError(f"recipe {path}: 'base' must be a file path, got {base!r}")
    inherited = _read_with_bases(path.parent / base, (*chain, path))
    inherited.pop("name", None)  # a run is named after the recipe given, not its base
    return _merge(inherited, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_scalar(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SegDiffInputError(f"override {key}={text!r} is not a valid YAML value") from err


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise SegDiffInputError(f"override key {key!r} is not a dotted path like optim.lr")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SegDiffInputError(f"override {key}: {part!r} holds a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking every key and type."""
    label = where or "the recipe"
    if not isinstance(data, dict):
        raise SegDiffInputError(f"recipe key {label} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SegDiffInputError(
            f"unknown recipe key(s) {', '.join(_join(where, k) for k in unknown)}; "
            f"{label} takes: {', '.join(known)}"
        )
    values = {}
    for name, value in data.items():
        key = _join(where, name)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value if value is not None else {}, key)
        else:
            values[name] = _check_type(key, hint, value)
    return cls(**values)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_type(key: str, hint: Any, value: Any) -> Any:
    """Return ``value`` as type ``hint`` or raise a clear error (numbers in strings accepted,
    since YAML reads ``1e-5`` as a string)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, inner, value)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise SegDiffInputError(f"recipe key {key} must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SegDiffInputError(f"recipe key {key} must be a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", args[0], item) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise SegDiffInputError(
                f"recipe key {key} must be a mapping of component name to settings, got {value!r}"
            )
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SegDiffInputError(f"recipe key {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SegDiffInputError(f"recipe key {key} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SegDiffInputError(f"recipe key {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SegDiffInputError(f"recipe key {key} must be text, got {value!r}")
        return value
    return value


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
    unknown = sorted(set(recipe.model.tiny) - set(TINY_COMPONENTS))
    if unknown:
        problems.append(f"model.tiny has unknown components {unknown}; known: {TINY_COMPONENTS}")
    for value in (recipe.validation.denoising_steps, recipe.validation.ensemble_size):
        if value is not None and value < 1:
            problems.append("validation.denoising_steps and ensemble_size must be at least 1")
    if problems:
        raise SegDiffInputError("invalid recipe: " + "; ".join(problems))
