"""The README.md model card of an export: method, training data and classes, metrics, usage,
license. Everything in it comes from the pipeline and the run's recipe, metrics and training
data record when they are known; what is not known is said to be unknown rather than guessed.
No path of the exporting machine appears in it: folders are named by their last component."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import segdiff
from segdiff.depth_coding import NONE_LABEL
from segdiff.export.source import ModelSource
from segdiff.model.pipeline import SegDiffPipeline

METRIC_NAMES = {
    "mIoU": "mIoU",
    "pixel_accuracy": "Pixel accuracy",
    "mean_accuracy": "Mean accuracy",
    "fwIoU": "Frequency-weighted IoU",
}


@dataclass(frozen=True)
class TrainingRecord:
    """What the run folder tells about how the model was made; empty when unknown."""

    recipe: dict[str, Any]
    metrics: dict[str, Any]
    dataset_meta: dict[str, Any]
    """The run's training_data.json (the prepared dataset's meta.json and the split), else the
    meta.json of the dataset the recipe names, when still on this machine."""

    @classmethod
    def read(cls, source: ModelSource) -> "TrainingRecord":
        recipe = _load(source.recipe, yaml.safe_load)
        dataset_meta = _load(source.training_data, json.loads)
        root = recipe.get("data", {}).get("root")
        if not dataset_meta and root:
            dataset_meta = _load(Path(root) / "meta.json", json.loads)
        return cls(recipe, _load(source.metrics, json.loads), dataset_meta)

    @property
    def classes(self) -> list[str]:
        return [str(name) for name in self.dataset_meta.get("vocabulary", [])]

    @property
    def origin(self) -> str:
        """How the weights began: "stable-diffusion" (fine-tuned), "tiny" (from scratch) or
        "unknown" (no recipe came with the model)."""
        return self.recipe.get("model", {}).get("kind", "unknown")

    @property
    def base(self) -> str | None:
        """The Stable Diffusion 2 model fine-tuned, as the recipe names it."""
        model = self.recipe.get("model", {})
        return model.get("pretrained") if self.origin == "stable-diffusion" else None


def _hub_id(base: str | None) -> str | None:
    """``base`` if it names a hub model rather than a folder of this machine."""
    if not base or os.path.isabs(base) or base.startswith(".") or Path(base).exists():
        return None
    return base if base.count("/") == 1 else None


def _base_name(base: str) -> str:
    hub = _hub_id(base)
    return f"`{hub}`" if hub else f"a local Stable Diffusion 2 folder (`{Path(base).name}`)"


def model_card(
    pipe: SegDiffPipeline,
    source: ModelSource,
    export_format: str,
    dtypes: list[str],
    record: TrainingRecord,
) -> str:
    """The card's Markdown (with Hugging Face metadata in its front matter)."""
    sections = [
        _front_matter(export_format, record),
        _overview(pipe, source, export_format, dtypes, record),
        _training(record, source),
        _evaluation(record.metrics),
        _usage_diffusers(dtypes) if export_format == "diffusers" else _usage_onnx(dtypes),
        _license(record.base),
    ]
    return "\n\n".join(sections) + "\n"


def _front_matter(export_format: str, record: TrainingRecord) -> str:
    meta: dict[str, Any] = {
        "license": "apache-2.0",
        "library_name": "diffusers" if export_format == "diffusers" else "onnx",
        "pipeline_tag": "image-segmentation",
        "tags": ["segdiff", "semantic-segmentation", "open-vocabulary", "diffusion"],
    }
    if _hub_id(record.base):
        meta["base_model"] = _hub_id(record.base)
    if record.dataset_meta.get("dataset"):
        meta["tags"].append(record.dataset_meta["dataset"])
    return "---\n" + yaml.safe_dump(meta, sort_keys=False).strip() + "\n---"


def _what_it_is(record: TrainingRecord) -> str:
    if record.origin == "stable-diffusion":
        base = _base_name(record.base) if record.base else "Stable Diffusion 2"
        return (
            f"Open-vocabulary semantic segmentation with Stable Diffusion 2 ({base}) "
            "fine-tuned by segdiff."
        )
    if record.origin == "tiny":
        return (
            "A tiny segdiff model for open-vocabulary semantic segmentation, trained from "
            "scratch (no pretrained weights) on the data below: it shows the method at work "
            "on that data, and knows nothing else."
        )
    return (
        "A segdiff model for open-vocabulary semantic segmentation; how its weights began is "
        "not recorded with it."
    )


def _overview(
    pipe: SegDiffPipeline,
    source: ModelSource,
    export_format: str,
    dtypes: list[str],
    record: TrainingRecord,
) -> str:
    config = pipe.config
    sizes = ", ".join(
        f"{name} {sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6:.3g}M"
        for name in ("unet", "vae", "text_encoder", "cam")
    )
    return f"""# segdiff model

{_what_it_is(record)}
Exported as **{export_format}** ({", ".join(dtypes)}) from the {source.describe_shareably()} by
`segdiff export` (segdiff {segdiff.__version__}).

## Method

Given an image and an ordered list of K class names, the model draws a *depth-coded mask*:
class k (0-based) at gray level `round(255 * (k + 1) / K)`, gray 0 for "none of the classes".
The image's VAE latent is concatenated with the noisy mask latent (an 8-channel UNet input),
and each class name enters cross-attention as one token of the Content Attention Module
(CAM): the text encoder's embedding of the prompt `{config.prompt_template}` plus a learned
embedding of the class's gray level, so the UNet knows which class goes to which level.
Inference denoises from noise with DDIM, decodes with the VAE, reads each pixel's class from
its gray level and takes a per-pixel vote over an ensemble of runs.

Defaults saved with the model:

- denoising steps: {config.default_denoising_steps}
- ensemble size: {config.default_ensemble_size}
- processing resolution (long edge, px): {config.default_processing_resolution}
- classes per pass: {config.max_classes_per_pass} (longer lists are segmented in two passes)
- parameters: {sizes}"""


def _training(record: TrainingRecord, source: ModelSource) -> str:
    lines = ["## Training", ""]
    if not record.recipe:
        lines.append(
            "No training recipe came with this model, so its training data and the classes "
            "it was trained on are not recorded here."
        )
        return "\n".join(lines)
    train = record.recipe.get("train", {})
    data = record.recipe.get("data", {})
    initialised = {
        "stable-diffusion": _base_name(record.base) if record.base else None,
        "tiny": "random weights (a tiny model built from its config, trained from scratch)",
    }.get(record.origin)
    facts = {
        "Initialised from": initialised,
        "Training data": _training_data(record.dataset_meta, data),
        "Recipe": record.recipe.get("name"),
        "Optimizer steps": train.get("steps"),
        "Checkpoint step": source.checkpoint_step,
        "Batch size": train.get("batch_size"),
        "Crop resolution": data.get("resolution"),
        "Learning rate": record.recipe.get("optim", {}).get("lr"),
        "EMA weights": train.get("ema", {}).get("enabled"),
    }
    lines += [f"- {name}: {value}" for name, value in facts.items() if value is not None]
    lines.append("")
    if record.classes:
        lines.append(
            f"Trained on {len(record.classes)} classes (any other name can be asked for, "
            "with less reliable results): " + ", ".join(record.classes) + "."
        )
    else:
        lines.append(
            "The prepared dataset named in the recipe was not found when this model was "
            "exported, so the classes it was trained on are not listed."
        )
    lines.append("\nThe full recipe is in `recipe.yaml`.")
    return "\n".join(lines)


def _training_data(meta: dict[str, Any], data: dict[str, Any]) -> str | None:
    """The dataset, split and size trained on, as `segdiff prepare` recorded them."""
    if not meta.get("dataset"):
        root = data.get("root")
        return f"a prepared dataset (folder `{Path(root).name}`)" if root else None
    split = meta.get("split") or data.get("train_split") or "train"
    text = f"{meta['dataset']} (benchmark {meta.get('benchmark') or 'none'}), split {split}"
    count = meta.get("splits", {}).get(split)
    if count:
        text += f", {count} images"
    if meta["dataset"] == "shapes":
        options = meta.get("options", {})
        low, high = (options.get("size") or ["?", "?"])[:2]
        sides = f"{low}" if low == high else f"{low} to {high}"
        text += (
            "; synthetic shapes generated by `segdiff prepare shapes`"
            f" (seed {options.get('seed', '?')}, {sides} px images)"
        )
    return text


def _evaluation(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "## Evaluation\n\nNo evaluation metrics were recorded with this model."
    rows = [
        f"| {label} | {metrics[key]:.2f} |"
        for key, label in METRIC_NAMES.items()
        if isinstance(metrics.get(key), int | float)
    ]
    scored = ""
    if metrics.get("benchmark") and metrics.get("images"):
        split = metrics.get("split", "?")
        scored = f", {metrics['benchmark']} {split} split, {metrics['images']} images"
    if isinstance(metrics.get("step"), int):
        scored += f", at training step {metrics['step']}"
    text = f"## Evaluation\n\nFrom `metrics.json` (percent{scored}):\n\n"
    text += "| Metric | Value |\n|---|---|\n"
    text += "\n".join(rows)
    per_class = metrics.get("per_class") or {}
    if per_class:
        table = "\n".join(
            f"| {name} | {'no ground truth' if iou is None else f'{iou:.2f}'} |"
            for name, iou in per_class.items()
        )
        text += (
            "\n\n<details><summary>IoU per class</summary>\n\n"
            f"| Class | IoU |\n|---|---|\n{table}\n\n</details>"
        )
    return text


def _usage_diffusers(dtypes: list[str]) -> str:
    variants = [d for d in dtypes if d != "fp32"]
    half = ""
    if variants:
        variant = variants[0]
        torch_dtype = {"fp16": "float16", "bf16": "bfloat16"}[variant]
        half = (
            f"\n\nThe `{variant}` variant halves the download; on a GPU load it with\n"
            f'`SegDiffPipeline.from_pretrained("path/to/this/folder", variant="{variant}", '
            f'dtype=torch.{torch_dtype}).to("cuda")`.'
        )
    return f"""## Usage

Install segdiff (`pip install segdiff`). Command line (writes labels, overlay, uncertainty and
a JSON summary per image):

```
segdiff infer photo.jpg --classes "cat,sofa,window" --model path/to/this/folder --output out/
```

Python:

```python
import torch
from PIL import Image
from segdiff import SegDiffPipeline

pipe = SegDiffPipeline.from_pretrained("path/to/this/folder")
result = pipe(Image.open("photo.jpg"), ["cat", "sofa", "window"],
              generator=torch.Generator().manual_seed(0))
labels = result.labels[0]  # class index per pixel, {NONE_LABEL} = none of the classes
```{half}

The folder holds data only, no code: SegDiffPipeline comes from the installed segdiff
package. Each network also loads with plain diffusers or transformers, e.g.
`UNet2DConditionModel.from_pretrained("path/to/this/folder", subfolder="unet")`; diffusers'
own `DiffusionPipeline` does not know SegDiffPipeline, so use the class above for the whole
pipeline."""


def _usage_onnx(dtypes: list[str]) -> str:
    return f"""## Usage (ONNX, {dtypes[0]})

`segdiff_onnx.json` lists every graph with its inputs and outputs and the pipeline settings;
`verification.json` holds the largest difference of each graph from PyTorch. `segdiff infer`
does not run this folder; it runs the diffusers export (`segdiff export --format diffusers`).
One image:

1. Tokenize `prompt_template.format(name)` for each class with `tokenizer/` (padded to its
   maximum length) and run `text_encoder.onnx` to get one embedding per class.
2. Run `cam.onnx` on the embeddings in class-list order, their gray levels
   `round(255 * (k + 1) / K) / 255` and an attention mask: the UNet's context.
3. Run `vae_encoder.onnx` on the image scaled to [-1, 1], padded so both sides are multiples
   of `latent_multiple` pixels (the graph refuses other sizes: its error names the node
   `image_sides_must_be_multiples_of_N`).
4. Start from Gaussian noise and, for each DDIM timestep of `scheduler/` (trailing
   spacing), run `unet.onnx` on the image latent concatenated with the noisy mask latent.
5. Run `vae_decoder.onnx`, average its 3 channels, and give each pixel the class whose gray
   level is nearest (gray 0 = none)."""


def _license(base: str | None) -> str:
    text = "## License\n\nApache-2.0, as segdiff itself."
    if base:
        text += (
            f" The weights are fine-tuned from `{base}`; the terms of its license (for "
            "Stable Diffusion 2, CreativeML Open RAIL++-M) apply to them as well."
        )
    return text


def _load(path: Path | None, parse) -> dict[str, Any]:
    """A recipe or metrics file as a dict; a missing or unreadable one counts as unknown."""
    if path is None:
        return {}
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}
