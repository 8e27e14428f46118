"""Loading a pipeline for the command line: default model, device and precision in one place."""

from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from segdiff.errors import SegDiffInputError
from segdiff.model import default_model_path
from segdiff.model.pipeline import SegDiffPipeline


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
