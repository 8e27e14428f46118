"""Evaluation outputs: metrics.json, per_class.csv, the confusion matrix, samples, a table.

Every file is written atomically (temp file + rename), so a crashed run never leaves a
metrics.json that looks complete.
"""

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from segdiff.evaluation.evaluate import EvalResult
from segdiff.evaluation.render import confusion_image
from segdiff.imageio import (
    atomic_path,
    remove_stale_temporaries,
    save_json,
    save_png,
    save_text,
)

MAX_EXAMPLES = 10
"""Image names listed per problem kind in metrics.json and the terminal."""
MAX_TABLE_CLASSES = 60


def metrics_dict(result: EvalResult, settings: dict[str, Any]) -> dict[str, Any]:
    """The content of metrics.json (percentages; per-class IoU null for classes without gt)."""
    metrics = result.metrics
    return {
        "benchmark": result.benchmark,
        "split": result.split,
        "images": result.scored,
        "images_listed": result.images,
        "mIoU": metrics.miou,
        "pixel_accuracy": metrics.pixel_accuracy,
        "mean_accuracy": metrics.mean_accuracy,
        "fwIoU": metrics.fwiou,
        "per_class": {
            name: _number(iou) for name, iou in zip(result.classes, metrics.iou, strict=True)
        },
        "problems": {
            "missing_predictions": len(result.missing),
            "missing_examples": result.missing[:MAX_EXAMPLES],
            "failed_images": len(result.failures),
            "failed_examples": [
                {"image": name, "error": why} for name, why in result.failures[:MAX_EXAMPLES]
            ],
            "out_of_range_pixels": sum(result.out_of_range.values()),
            "out_of_range_images": len(result.out_of_range),
            "out_of_range_examples": list(result.out_of_range)[:MAX_EXAMPLES],
        },
        "settings": {**settings, "num_processes": result.num_processes},
    }


def write_outputs(result: EvalResult, output_dir: str | Path, settings: dict[str, Any]) -> Path:
    """Write every output file into ``output_dir`` (clearing the temporaries a killed run
    left there); returns it."""
    output_dir = Path(output_dir)
    for folder in (output_dir, output_dir / "samples"):
        remove_stale_temporaries(folder)
    save_json(metrics_dict(result, settings), output_dir / "metrics.json")
    save_text(per_class_csv(result), output_dir / "per_class.csv")
    with atomic_path(output_dir / "confusion.npy") as tmp:
        np.save(tmp, result.confusion)
    save_png(confusion_image(result.confusion, result.classes), output_dir / "confusion.png")
    for number, (name, panel) in enumerate(result.samples):
        save_png(panel, output_dir / "samples" / f"{number:02d}_{Path(name).stem}.png")
    return output_dir


def per_class_csv(result: EvalResult) -> str:
    metrics = result.metrics
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "class", "iou", "accuracy", "gt_pixels", "pred_pixels"])
    for k, name in enumerate(result.classes):
        iou, accuracy = _number(metrics.iou[k]), _number(metrics.accuracy[k])
        writer.writerow(
            [
                k,
                name,
                "" if iou is None else f"{iou:.4f}",
                "" if accuracy is None else f"{accuracy:.4f}",
                metrics.gt_pixels[k],
                metrics.pred_pixels[k],
            ]
        )
    return buffer.getvalue()


def print_summary(result: EvalResult, console: Console, output_dir: Path | None = None) -> None:
    """Metrics as rich tables, then a warning line for each kind of problem found."""
    metrics = result.metrics
    summary = Table(title=f"{result.benchmark} ({result.split}, {result.scored} images)")
    for column in ("mIoU", "pixel acc", "mean acc", "fwIoU"):
        summary.add_column(column, justify="right")
    summary.add_row(
        *(
            f"{value:.2f}"
            for value in (
                metrics.miou,
                metrics.pixel_accuracy,
                metrics.mean_accuracy,
                metrics.fwiou,
            )
        )
    )
    if len(result.classes) <= MAX_TABLE_CLASSES:
        per_class = Table(title="per class")
        for column, justify in (("class", "left"), ("IoU", "right"), ("acc", "right")):
            per_class.add_column(column, justify=justify)
        per_class.add_column("gt pixels", justify="right")
        for k, name in enumerate(result.classes):
            iou, accuracy = _number(metrics.iou[k]), _number(metrics.accuracy[k])
            per_class.add_row(
                name,
                "-" if iou is None else f"{iou:.2f}",
                "-" if accuracy is None else f"{accuracy:.2f}",
                str(metrics.gt_pixels[k]),
            )
        console.print(per_class)
    console.print(summary)
    if result.seconds > 0:
        console.print(
            f"{result.images} images in {result.seconds:.1f} s: "
            f"{result.images_per_second:.2f} images/s"
        )
    for line in problem_lines(result):
        console.print(Text("Warning: ", style="yellow") + Text(line))
    if output_dir is not None:
        console.print(f"outputs in {output_dir}", markup=False)


def problem_lines(result: EvalResult) -> list[str]:
    lines = []
    if result.missing:
        note = f" ({result.missing_note})" if result.missing_note else ""
        lines.append(
            f"{len(result.missing)} of {result.images} images have no prediction and were "
            f"not scored: {_examples(result.missing)}{note}"
        )
    if result.failures:
        examples = "; ".join(f"{name}: {why}" for name, why in result.failures[:3])
        lines.append(f"{len(result.failures)} images could not be scored: {examples}")
    if result.out_of_range:
        lines.append(
            f"{sum(result.out_of_range.values())} predicted pixels in "
            f"{len(result.out_of_range)} images hold no class id of {result.benchmark} "
            f"(scored as misses): {_examples(list(result.out_of_range))}"
        )
    return lines


def _examples(names: list[str]) -> str:
    more = f", ... ({len(names) - MAX_EXAMPLES} more)" if len(names) > MAX_EXAMPLES else ""
    return ", ".join(names[:MAX_EXAMPLES]) + more


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
