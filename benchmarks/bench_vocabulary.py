"""Large vocabularies: mIoU with a benchmark's classes alone and padded with distractor names.

A model decodes at most ``max_classes_per_pass`` classes in one pass; a longer list goes
through the pipeline's two-pass strategy (chunks, then the classes found). This script scores
the same images twice with `segdiff.evaluation`: once with the benchmark's own class list, once
with that list followed by N names of other benchmarks' classes (ADE-150 first) that the images
never contain. A pixel labeled with a distractor counts as a miss for its true class.

Run: ``python benchmarks/bench_vocabulary.py --data data/shapes --distractors 100``
"""

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from segdiff.data.prepared import open_prepared
from segdiff.depth_coding import NONE_LABEL
from segdiff.evaluation.benchmarks import get_benchmark
from segdiff.evaluation.evaluate import evaluate
from segdiff.evaluation.predictors import from_predictor
from segdiff.model.loading import load_pipeline
from segdiff.vocabularies import VOCABULARY_NAMES, get_vocabulary


def distractor_names(count: int, exclude: Sequence[str]) -> list[str]:
    """``count`` class names of the built-in vocabularies (ADE-150 first), none in ``exclude``."""
    taken = set(exclude)
    names: list[str] = []
    for vocabulary in ("ade150", *VOCABULARY_NAMES):
        for name in get_vocabulary(vocabulary).classes:
            if len(names) == count:
                return names
            if name not in taken:
                names.append(name)
                taken.add(name)
    raise ValueError(f"only {len(names)} distractor names are available, not {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset (segdiff prepare)")
    parser.add_argument("--benchmark", default="shapes")
    parser.add_argument("--model", help="model folder or hub id (default: the bundled model)")
    parser.add_argument("--distractors", type=int, default=100)
    parser.add_argument("--limit", type=int, default=100, help="images scored")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    benchmark = get_benchmark(args.benchmark)
    prepared = open_prepared(args.data, benchmark.split)
    pipe, _ = load_pipeline(args.model, args.device)
    pipe.set_progress_bar_config(disable=True)
    own = list(benchmark.classes)
    padded = own + distractor_names(args.distractors, own)

    def predict_with(class_list: list[str]):
        def predict(image: Image.Image, _classes: Sequence[str]) -> np.ndarray:
            output = pipe(image, class_list, generator=torch.Generator().manual_seed(args.seed))
            labels = output.labels[0].astype(np.int64)
            # Distractors (and none) are not benchmark classes: scored as misses.
            return np.where(labels < len(own), labels, NONE_LABEL).astype(np.uint8)

        return predict

    print(
        f"{benchmark.name}: {args.limit} images, {len(own)} classes; the model decodes "
        f"{pipe.config.max_classes_per_pass} classes a pass, "
        f"{pipe.config.default_denoising_steps} steps x {pipe.config.default_ensemble_size} members"
    )
    print(f"{'class list':<32} {'mIoU':>6} {'pixel acc':>9} {'s/img':>6}")
    for label, class_list in (
        (f"{benchmark.name} alone ({len(own)})", own),
        (f"+ {args.distractors} distractors ({len(padded)})", padded),
    ):
        start = time.perf_counter()
        source = from_predictor(predict_with(class_list), prepared, own)
        result = evaluate(benchmark, prepared, source, limit=args.limit, progress=False)
        seconds = (time.perf_counter() - start) / result.scored
        metrics = result.metrics
        print(f"{label:<32} {metrics.miou:6.1f} {metrics.pixel_accuracy:9.1f} {seconds:6.2f}")


if __name__ == "__main__":
    main()
