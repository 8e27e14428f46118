"""Loading a model: what counts as a segdiff model folder, and the default model, device and
precision of the command line in one place."""

import json
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from segdiff.errors import SegDiffInputError
from segdiff.model import default_model_path
from segdiff.model.pipeline import SegDiffPipeline, pipeline_class_name

ONNX_DESCRIPTION = "segdiff_onnx.json"
"""The file that marks an ONNX export (written by segdiff.export.onnx)."""


def pick_device(device: str | None = None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise SegDiffInputError(f"unknown device {device!r}: {err}") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SegDiffInputError(f"device {device!r} asked for, but no CUDA GPU is available")
    return chosen


def load_pipeline(
    model: str | Path | None = None,
    device: str | None = None,
    half_precision: bool = False,
    variant: str | None = None,
) -> tuple[SegDiffPipeline, list[str]]:
    """Load ``model`` (default: the bundled tiny shapes model) on ``device``.

    Half precision means fp16 weights on CUDA. CPU kernels for fp16 are slow or missing, so
    on CPU the model stays fp32 and the returned notes say so.
    """
    notes = []
    if model is None:
        model = default_model_path()
        if model is None:
            raise SegDiffInputError(
                "no --model given and this install has no bundled model; pass a segdiff "
                "model folder or hub id with --model"
            )
        notes.append(
            "Using the bundled tiny model: a CPU demo trained only on synthetic shapes "
            "(background, circle, square, triangle, star, ring, cross), still undertrained "
            "(about 16 mIoU on held-out shapes); it knows nothing else."
        )
    target = pick_device(device)
    dtype = torch.float32
    if half_precision:
        if target.type == "cuda":
            dtype = torch.float16
        else:
            notes.append("--half-precision applies on CUDA GPUs only; running fp32 on the CPU.")
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    pipe = SegDiffPipeline.from_pretrained(model, dtype=dtype, variant=variant)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(target), notes


def check_is_segdiff_model(name_or_path: str | Path, cache_dir: str | None = None) -> None:
    """Raise a clear SegDiffInputError unless this is a segdiff pipeline folder or hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        index_path = path / "model_index.json"
        if (path / ONNX_DESCRIPTION).is_file():
            raise SegDiffInputError(
                f"{path} is an ONNX export (segdiff export --format onnx), which segdiff runs "
                "only as the diffusers export: export the model again with --format diffusers "
                "and give that folder, or run these graphs with onnxruntime as their README.md "
                "says"
            )
        if not index_path.is_file():
            raise SegDiffInputError(
                f"{path} is not a segdiff model folder: it has no model_index.json"
            )
    elif path.exists() or str(name_or_path).count("/") != 1:
        raise SegDiffInputError(f"model not found: {name_or_path} (a folder or a hub id)")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            index_path = Path(
                hf_hub_download(str(name_or_path), "model_index.json", cache_dir=cache_dir)
            )
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
            raise SegDiffInputError(
                f"cannot get model {name_or_path} from the Hugging Face hub or its cache: {err}"
            ) from err
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError) as err:
        raise SegDiffInputError(f"{index_path} is not valid JSON: {err}") from err
    if pipeline_class_name(index) != SegDiffPipeline.__name__ or "cam" not in index:
        kind = index.get("_class_name", "unknown")
        raise SegDiffInputError(
            f"{name_or_path} is a {kind} folder, not a segdiff model (no 'cam' component). "
            "A Stable Diffusion 2 folder must first be fine-tuned with 'segdiff train', or "
            "loaded in Python with SegDiffPipeline.from_stable_diffusion() for an untrained model."
        )
