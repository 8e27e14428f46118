"""What both export formats share: precision names, progress reporting and the records
(recipe, metrics, model card) that travel with a model."""

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from segdiff import run_folder
from segdiff.errors import SegDiffInputError
from segdiff.export.model_card import TrainingRecord, model_card
from segdiff.export.source import ModelSource
from segdiff.model.pipeline import SegDiffPipeline

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

StepCallback = Callable[[str], None]
"""Called with a short description as each step of an export starts (for a progress bar)."""


def check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise SegDiffInputError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def write_records(
    dest: Path,
    pipe: SegDiffPipeline,
    source: ModelSource,
    export_format: str,
    dtypes: list[str],
) -> None:
    """Copy the recipe and metrics the model came with into ``dest`` and write its card."""
    records = ((source.recipe, run_folder.RECIPE), (source.metrics, run_folder.METRICS))
    for path, filename in records:
        if path is not None:
            shutil.copyfile(path, dest / filename)
    card = model_card(pipe, source, export_format, dtypes, TrainingRecord.read(source))
    (dest / "README.md").write_text(card, encoding="utf-8")
