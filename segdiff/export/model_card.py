"""The README.md model card of an export: method, training data and classes, metrics, usage,
license. Everything in it comes from the pipeline and the run's recipe and metrics when they
are known; what is not known is said to be unknown rather than guessed."""

import json
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
    """meta.json of the prepared dataset the recipe trained on, when still on this machine."""

    @classmethod
    def read(cls, source: ModelSource) -> "TrainingRecord":
        recipe = _load(source.recipe, yaml.safe_load)
        root = recipe.get("data", {}).get("root")
        dataset_meta = _load(Path(root) / "meta.json", json.loads) if root else {}
        return cls(recipe, _load(source.metrics, json.loads), dataset_meta)

    @property
    def classes(self) -> list[str]:
        return [str(name) for name in self.dataset_meta.get("vocabulary", [])]


def model_card(
    pipe: SegDiffPipeline,
    source: ModelSource,
    export_format: str,
    dtypes: list[str],
    record: TrainingRecord,
) -> str:
    """The card's Markdown (with Hugging Face metadata in its front matter)."""
    model = record.recipe.get("model", {})
    base = model.get("pretrained") if model.get("kind") == "stable-diffusion" else None
    sections = [
        _front_matter(export_format, base, record.dataset_meta.get("dataset")),
        _overview(pipe, source, export_format, dtypes),
        _training(record, base, source),
        _evaluation(record.metrics),
        _usage_diffusers(dtypes) if export_format == "diffusers" else _usage_onnx(dtypes),
        _license(base),
    ]
    return "\n\n".join(sections) + "\n"


def _front_matter(export_format: str, base: str | None, dataset: str | None) -> str:
    meta: dict[str, Any] = {
        "license": "apache-2.0",
        "library_name": "diffusers" if export_format == "diffusers" else "onnx",
        "pipeline_tag": "image-segmentation",
        "tags": ["segdiff", "semantic-segmentation", "open-vocabulary", "diffusion"],
    }
    if base:
        meta["base_model"] = base
    if dataset:
        meta["tags"].append(dataset)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False).strip() + "\n---"


def _overview(
    pipe: SegDiffPipeline, source: ModelSource, export_format: str, dtypes: list[str]
) -> str:
    config = pipe.config
    sizes = ", ".join(
        f"{name} {sum(p.numel() for p in getattr(pipe, name).parameters()) / 1e6:.3g}M"
        for name in ("unet", "vae", "text_encoder", "cam")
    )
    return f"""# segdiff model

Open-vocabulary semantic segmentation with a fine-tuned Stable Diffusion 2 (segdiff).
Exported as **{export_format}** ({", ".join(dtypes)}) from the {source.describe()} by
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


def _training(record: TrainingRecord, base: str | None, source: ModelSource) -> str:
    lines = ["## Training", ""]
    if not record.recipe:
        lines.append(
            "No training recipe came with this model, so its training data and the classes "
            "it was trained on are not recorded here."
        )
        return "\n".join(lines)
    train = record.recipe.get("train", {})
    data = record.recipe.get("data", {})
    meta = record.dataset_meta
    dataset = None
    if meta.get("dataset"):
        dataset = f"{meta['dataset']} (benchmark {meta.get('benchmark') or 'none'})"
    facts = {
        "Initialised from": base or "a tiny model built from config (no pretrained weights)",
        "Training data": dataset or f"prepared dataset at {data.get('root')}",
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


def _evaluation(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "## Evaluation\n\nNo evaluation metrics were recorded with this model."
    rows = [
        f"| {label} | {metrics[key]:.2f} |"
        for key, label in METRIC_NAMES.items()
        if isinstance(metrics.get(key), int | float)
    ]
    text = "## Evaluation\n\nFrom `metrics.json` (percent):\n\n| Metric | Value |\n|---|---|\n"
    text += "\n".join(rows)
    per_class = metrics.get("per_class") or {}
    if per_class:
        table = "\n".join(f"| {name} | {iou:.2f} |" for name, iou in per_class.items())
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

Command line (writes labels, overlay, uncertainty and a JSON summary per image):

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
```{half}"""


def _usage_onnx(dtypes: list[str]) -> str:
    return f"""## Usage (ONNX, {dtypes[0]})

`segdiff_onnx.json` lists every graph with its inputs and outputs and the pipeline settings;
`verification.json` holds the largest difference of each graph from PyTorch. One image:

1. Tokenize `prompt_template.format(name)` for each class with `tokenizer/` (padded to its
   maximum length) and run `text_encoder.onnx` to get one embedding per class.
2. Run `cam.onnx` on the embeddings in class-list order, their gray levels
   `round(255 * (k + 1) / K) / 255` and an attention mask: the UNet's context.
3. Run `vae_encoder.onnx` on the image scaled to [-1, 1] (sides a multiple of
   `latent_multiple` pixels).
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
