"""Score a label source on a prepared split: one confusion matrix, sharded across processes.

Under a multi-process launch (``accelerate launch``, ``torchrun``) each process takes every
num_processes-th image (by index in the sorted image list), and the per-process results are
gathered and summed, so every process ends with the same result. A single process runs the
same code with one shard.

Per-image problems do not stop the run (a process that stopped would leave the others
waiting at the gather): missing predictions, unreadable files and size mismatches are
collected and reported, and out-of-range prediction values are counted and scored as misses.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from accelerate.utils import gather_object
from rich.progress import track

from segdiff.console import console
from segdiff.data.prepared import PreparedSplit
from segdiff.distributed import process_state
from segdiff.errors import SegDiffInputError
from segdiff.evaluation.benchmarks import Benchmark
from segdiff.evaluation.metrics import (
    SegmentationMetrics,
    compute_metrics,
    confusion_matrix,
    prediction_rows,
)
from segdiff.evaluation.predictors import BatchedLabels, LabelSource
from segdiff.evaluation.render import sample_panel
from segdiff.imageio import load_rgb

MAX_SAMPLES = 8


@dataclass
class EvalResult:
    """What a split evaluation found; identical on every process."""

    benchmark: str
    split: str
    classes: tuple[str, ...]
    confusion: np.ndarray
    images: int
    """Images in the evaluated list (after --limit)."""
    scored: int = 0
    missing: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(image name, why it could not be scored)."""
    out_of_range: dict[str, int] = field(default_factory=dict)
    """Image name -> pixels whose predicted value is no class id (scored as misses)."""
    samples: list[tuple[str, np.ndarray]] = field(default_factory=list)
    """(image name, image | gt | prediction panel) for the first few images."""
    num_processes: int = 1
    missing_note: str = ""
    """Where predictions were looked for, said with the missing ones."""
    seconds: float = 0.0
    """Wall-clock seconds of the scoring loop (the slowest process's)."""

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @cached_property
    def metrics(self) -> SegmentationMetrics:
        return compute_metrics(self.confusion)


def evaluate(
    benchmark: Benchmark,
    prepared: PreparedSplit,
    labels: LabelSource,
    *,
    limit: int | None = None,
    max_samples: int = MAX_SAMPLES,
    progress: bool = True,
    missing_note: str = "",
) -> EvalResult:
    """Score ``labels`` on ``prepared`` (its first ``limit`` images if given) for
    ``benchmark``. Raises SegDiffInputError when nothing could be scored. ``missing_note``
    (where predictions were looked for) goes with the report of missing ones."""
    lut = benchmark.label_lut(prepared.vocabulary)
    names = prepared.image_names[:limit]
    if not names:
        raise SegDiffInputError(f"split {prepared.split!r} of {prepared.root} has no images")
    classes = benchmark.classes
    state = process_state()
    shard = EvalResult(
        benchmark.name,
        prepared.split,
        classes,
        confusion=np.zeros((len(classes) + 1, len(classes)), dtype=np.int64),
        images=len(names),
        num_processes=state.num_processes,
    )
    indices = range(state.process_index, len(names), state.num_processes)
    start = time.perf_counter()
    predictions = _predictions(labels, [names[index] for index in indices])
    for index, (name, predicted) in zip(
        indices,
        track(
            predictions,
            total=len(indices),
            description=f"eval {benchmark.name}",
            console=console,
            disable=not (progress and state.is_main_process),
        ),
        strict=True,
    ):
        try:
            if isinstance(predicted, SegDiffInputError):
                raise predicted
            _score_image(shard, benchmark, prepared, lut, predicted, name, index < max_samples)
        except SegDiffInputError as err:
            shard.failures.append((name, str(err)))
    shard.seconds = time.perf_counter() - start

    result = _merge(gather_object([shard]))
    result.missing_note = missing_note
    if result.scored == 0 or result.confusion.sum() == 0:
        raise SegDiffInputError(_nothing_scored(result, prepared))
    return result


def _predictions(
    labels: LabelSource, names: list[str]
) -> Iterator[tuple[str, np.ndarray | SegDiffInputError | None]]:
    """(name, prediction, or the SegDiffInputError it raised) in ``names`` order; a model's
    source predicts several images per call while the next ones load."""
    if isinstance(labels, BatchedLabels):
        yield from labels.in_order(names)
        return
    for name in names:
        try:
            yield name, labels(name)
        except SegDiffInputError as err:
            yield name, err


def _score_image(
    shard: EvalResult,
    benchmark: Benchmark,
    prepared: PreparedSplit,
    lut: np.ndarray,
    predicted: np.ndarray | None,
    name: str,
    keep_sample: bool,
) -> None:
    """Add one image's prediction to ``shard``; SegDiffInputError when it cannot be scored."""
    gt = benchmark.ground_truth(prepared, lut, name)
    if predicted is None:
        shard.missing.append(name)
        return
    if predicted.shape != gt.shape:
        raise SegDiffInputError(f"prediction has shape {predicted.shape}, ground truth {gt.shape}")
    classes = benchmark.classes
    rows, out_of_range = prediction_rows(predicted, len(classes))
    sample = None
    if keep_sample:
        sample = sample_panel(load_rgb(prepared.image_path(name)), gt, rows, classes)
    shard.confusion += confusion_matrix(rows, gt, len(classes))
    shard.scored += 1
    if out_of_range:
        shard.out_of_range[name] = out_of_range
    if sample is not None:
        shard.samples.append((name, sample))


def _merge(shards: list[EvalResult]) -> EvalResult:
    """Sum the per-process results; lists come back in image (sorted name) order."""
    first = shards[0]
    merged = EvalResult(
        first.benchmark,
        first.split,
        first.classes,
        confusion=sum(shard.confusion for shard in shards),
        images=first.images,
        num_processes=first.num_processes,
        seconds=max(shard.seconds for shard in shards),
    )
    for shard in shards:
        merged.scored += shard.scored
        merged.missing += shard.missing
        merged.failures += shard.failures
        merged.out_of_range.update(shard.out_of_range)
        merged.samples += shard.samples
    merged.missing.sort()
    merged.failures.sort()
    merged.out_of_range = dict(sorted(merged.out_of_range.items()))
    merged.samples.sort(key=lambda sample: sample[0])
    return merged


def _nothing_scored(result: EvalResult, prepared: PreparedSplit) -> str:
    reasons = []
    if result.missing:
        note = f"; {result.missing_note}" if result.missing_note else ""
        reasons.append(f"{len(result.missing)} have no prediction (e.g. {result.missing[0]}{note})")
    if result.failures:
        name, why = result.failures[0]
        reasons.append(f"{len(result.failures)} could not be scored (e.g. {name}: {why})")
    if result.scored:
        reasons.append(f"the {result.scored} scored ones have no labeled pixel")
    return (
        f"nothing could be scored for {result.benchmark} on {prepared.root} "
        f"(split {prepared.split}): of {result.images} images, {'; '.join(reasons)}."
    )
