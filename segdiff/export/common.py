"""What both export formats share: precision names, progress reporting and the records
(recipe, metrics, model card) that travel with a model."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

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
    """Write the recipe, metrics and training data record the model came with, and its card,
    into ``dest``; then take this machine's paths out of every JSON file there."""
    record = TrainingRecord.read(source)
    if record.recipe:
        recipe = yaml.safe_dump(_without_machine_paths(record.recipe), sort_keys=False)
        (dest / run_folder.RECIPE).write_text(recipe, encoding="utf-8")
    for data, filename in (
        (record.metrics, run_folder.METRICS),
        (record.dataset_meta, run_folder.TRAINING_DATA),
    ):
        if data:
            write_json(data, dest / filename)
    card = model_card(pipe, source, export_format, dtypes, record)
    (dest / "README.md").write_text(card, encoding="utf-8")
    for path in dest.rglob("*.json"):
        _remove_machine_paths(path)


def _without_machine_paths(value: Any) -> Any:
    """``value`` (parsed JSON or YAML) with every absolute path reduced to its last component:
    records travel with the model, the exporting machine's folders do not."""
    if isinstance(value, dict):
        return {key: _without_machine_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_machine_paths(item) for item in value]
    if isinstance(value, str) and os.path.isabs(value) and len(value) > 1:
        return Path(value).name
    return value


def _remove_machine_paths(path: Path) -> None:
    """Drop the ``_name_or_path`` that diffusers and transformers record (the folder a
    component was loaded from) and reduce other absolute paths to their last component."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cleaned = _without_machine_paths(data)
    if isinstance(cleaned, dict):
        cleaned.pop("_name_or_path", None)
    if cleaned != data:
        write_json(cleaned, path)


def write_json(data: Any, dest: Path) -> None:
    dest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
