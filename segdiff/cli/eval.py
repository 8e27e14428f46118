"""`segdiff eval`: score a model or a folder of label PNGs on a prepared benchmark split.

Runs as one process, or sharded with ``accelerate launch --multi_gpu -m segdiff eval ...``
(or ``torchrun -m``): every process scores its share of the images, the confusion matrices
are summed, and the main process writes the outputs.
"""

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from segdiff.cli.common import (
    HalfPrecisionOption,
    PermuteClassesOption,
    check_output_folder,
    console,
    model_default_help,
    reports_input_errors,
    reports_out_of_memory,
)
from segdiff.depth_coding import NONE_LABEL
from segdiff.errors import SegDiffInputError
from segdiff.evaluation.benchmarks import BENCHMARK_NAMES, Benchmark, get_benchmark
from segdiff.evaluation.predictors import (
    from_directory,
    from_predictor,
    load_model_predictor,
    prediction_names,
)
from segdiff.model import default_model_path
from segdiff.run_folder import next_run_dir

DATA_ENV = "SEGDIFF_DATA"
MEMORY_ADVICE = (
    "Lower --processing-res (0, each image's own size, takes the most), --batch-size (1 runs "
    "one ensemble member at a time) or --ensemble-size."
)


@reports_input_errors
@reports_out_of_memory(MEMORY_ADVICE)
def command(
    benchmark: Annotated[str, typer.Argument(help=f"One of: {', '.join(BENCHMARK_NAMES)}.")],
    data: Annotated[
        Path | None,
        typer.Option(help=f"Prepared dataset folder (default: ${DATA_ENV}/<benchmark>)."),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Prepared split to score (default: val).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="segdiff model folder, training run, checkpoint or hub id (default: the "
            "bundled model)."
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help=f"Folder of predictions to score: label PNGs <id>.png of benchmark class ids "
            f"({NONE_LABEL} = none), or what 'segdiff infer' wrote (<id>_labels.png with "
            "<id>.json; its classes are matched to the benchmark's by name)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output folder (default: runs/eval/<benchmark>, -2, -3, ...)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N images.")] = None,
    ensemble_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Denoising runs per image, combined by vote."
            + model_default_help("default_ensemble_size", "5 for models segdiff trains"),
        ),
    ] = None,
    denoise_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="DDIM steps."
            + model_default_help("default_denoising_steps", "10 for models segdiff trains"),
        ),
    ] = None,
    processing_res: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Long edge the model works at; 0 = native."
            + model_default_help("default_processing_resolution", "768 for models segdiff trains"),
        ),
    ] = None,
    half_precision: HalfPrecisionOption = False,
    seed: Annotated[int | None, typer.Option(help="Seed of each image's noise.")] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            min=0,
            help="Ensemble members per UNet call, over the images of one call; 0 picks the "
            "fastest for the device.",
        ),
    ] = 0,
    images_per_call: Annotated[
        int,
        typer.Option(
            min=1,
            help="Images segmented together (their members share UNet calls when they have "
            "the same size after resizing) while the next ones load. Labels do not depend "
            "on it.",
        ),
    ] = 8,
    permute_classes: PermuteClassesOption = None,
) -> None:
    """Score a model (or ready-made predictions) on a benchmark: mIoU and friends."""
    from segdiff.data.prepared import open_prepared
    from segdiff.distributed import process_state
    from segdiff.evaluation.evaluate import evaluate
    from segdiff.evaluation.report import print_summary, write_outputs
    from segdiff.inference import check_seed

    check_seed(seed)
    check_output_folder(output)
    bench = get_benchmark(benchmark)
    data_dir = _data_dir(bench, data)
    prepared = open_prepared(data_dir, split or bench.split)
    settings: dict[str, Any] = {"data": str(data_dir.resolve()), "limit": limit}
    missing_note = ""
    state = process_state()
    if predictions is not None:
        if model is not None:
            raise SegDiffInputError("give either --model or --predictions, not both")
        labels = from_directory(predictions, bench.vocabulary)
        settings["predictions"] = str(predictions.resolve())
        missing_note = f"looked for {prediction_names(predictions)}"
    else:
        model_settings = {
            "ensemble_size": ensemble_size,
            "denoise_steps": denoise_steps,
            "processing_res": processing_res,
            "half_precision": half_precision,
            "seed": seed,
            "batch_size": batch_size,
            "permute_classes": permute_classes,
            "images_per_call": images_per_call,
        }
        predictor, notes = load_model_predictor(model, str(state.device), **model_settings)
        if state.is_main_process:
            for note in notes:
                console.print(note, markup=False)
        labels = from_predictor(predictor, prepared, bench.classes)
        settings.update(model=model or str(default_model_path()), **model_settings)

    result = evaluate(bench, prepared, labels, limit=limit, missing_note=missing_note)
    if state.is_main_process:
        output_dir = output or next_run_dir(Path("runs") / "eval" / bench.name)
        write_outputs(result, output_dir, settings)
        print_summary(result, console, output_dir)
    if result.failures:
        if not state.is_main_process:
            raise typer.Exit(code=2)
        raise SegDiffInputError(
            f"{len(result.failures)} of {result.images} images could not be scored (see above "
            f"and metrics.json); the metrics cover the other {result.scored}."
        )


def _data_dir(bench: Benchmark, data: Path | None) -> Path:
    """--data, else the first prepared dataset for the benchmark under $SEGDIFF_DATA."""
    if data is not None:
        return data
    root = os.environ.get(DATA_ENV)
    if not root:
        raise SegDiffInputError(
            f"no --data given and {DATA_ENV} is not set: pass the folder written by "
            f"'segdiff prepare' for {bench.name}, or set {DATA_ENV} to the folder holding "
            f"one prepared dataset per benchmark ({DATA_ENV}/{bench.name})."
        )
    candidates = [Path(root) / source for source in bench.sources]
    for candidate in candidates:
        if (candidate / "meta.json").is_file():
            return candidate
    raise SegDiffInputError(
        f"no prepared dataset for {bench.name} under {DATA_ENV}={root}: looked for "
        f"{' and '.join(str(c / 'meta.json') for c in candidates)}. Pass --data DIR."
    )
