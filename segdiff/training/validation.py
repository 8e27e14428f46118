"""Validation during training: the benchmark mIoU of the current weights on a val subset.

Scoring is `segdiff.evaluation`'s (detectron2 convention, sharded across processes), so the
figures logged during training are the ones `segdiff eval` reports for the same images.
"""

import numpy as np
import torch
from PIL import Image

from segdiff.data.prepared import PreparedSplit
from segdiff.evaluation.benchmarks import Benchmark, get_benchmark
from segdiff.evaluation.evaluate import EvalResult, evaluate
from segdiff.evaluation.predictors import from_predictor
from segdiff.model.pipeline import SegDiffPipeline


def validation_benchmark(prepared: PreparedSplit) -> Benchmark:
    """The benchmark the prepared split was made for (SegDiffInputError if it has none)."""
    return get_benchmark(prepared.benchmark)


def validate(
    pipeline: SegDiffPipeline,
    prepared: PreparedSplit,
    num_images: int,
    denoising_steps: int | None,
    ensemble_size: int | None,
    samples: int,
    seed: int,
) -> EvalResult:
    """Segment the first ``num_images`` of ``prepared`` with its whole benchmark vocabulary
    and score them; the result (identical on every process) keeps ``samples`` panels."""
    benchmark = validation_benchmark(prepared)

    def predict(image: Image.Image, classes: list[str]) -> np.ndarray:
        output = pipeline(
            image,
            classes,
            num_inference_steps=denoising_steps,
            ensemble_size=ensemble_size,
            generator=torch.Generator().manual_seed(seed),
        )
        return output.labels[0]

    labels = from_predictor(predict, prepared, benchmark.classes)
    return evaluate(
        benchmark, prepared, labels, limit=num_images, max_samples=samples, progress=False
    )
