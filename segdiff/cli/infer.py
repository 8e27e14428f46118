"""`segdiff infer`: segment images into any list of classes."""

import glob
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segdiff.cli.common import (
    HalfPrecisionOption,
    PermuteClassesOption,
    check_output_folder,
    console,
    fail,
    interrupted,
    model_default_help,
    reports_input_errors,
    reports_out_of_memory,
)

INFER_RUNS = Path("runs") / "infer"
"""Where results go without --output: runs/infer/<name of the first input>, then -2, -3, ..."""
MEMORY_ADVICE = (
    "Lower --processing-res (0, the image's own size, takes the most), --batch-size (1 runs "
    "one ensemble member at a time) or --ensemble-size. Outputs already written are kept; "
    "--skip-existing continues the run."
)


@reports_input_errors
@reports_out_of_memory(MEMORY_ADVICE)
def command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    classes: Annotated[
        str,
        typer.Option(
            "--classes",
            "-c",
            help='Class names: "cat,sofa,window", a file with one name a line, or a built-in '
            "vocabulary (voc21, ade150, shapes, ...). A lone name that looks like a missing "
            "file, a vocabulary name or a list without commas is refused; end it with a comma "
            'to mean it as written ("traffic light,").',
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="segdiff model folder, training run, checkpoint or hub id (default: the "
            "bundled tiny model)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=f"Output folder (default: {INFER_RUNS}/<name of the first input>, then -2, "
            "-3, ... for each new run).",
        ),
    ] = None,
    exist_ok: Annotated[
        bool,
        typer.Option(
            help=f"Without --output, write into {INFER_RUNS}/<name> even if it exists, instead "
            "of a new numbered folder."
        ),
    ] = False,
    ensemble_size: Annotated[
        int | None,
        typer.Option(
            help="Denoising runs per image, combined by vote."
            + model_default_help("default_ensemble_size", "5 for models segdiff trains")
        ),
    ] = None,
    denoise_steps: Annotated[
        int | None,
        typer.Option(
            help="DDIM steps per run."
            + model_default_help("default_denoising_steps", "10 for models segdiff trains")
        ),
    ] = None,
    processing_res: Annotated[
        int | None,
        typer.Option(
            help="Long edge to process at; 0 = native size."
            + model_default_help("default_processing_resolution", "768 for models segdiff trains")
        ),
    ] = None,
    output_processing_res: Annotated[
        bool, typer.Option(help="Write maps at the processing size instead of the input size.")
    ] = False,
    half_precision: HalfPrecisionOption = False,
    seed: Annotated[
        int | None, typer.Option(help="Random seed, 0 to 2^32 - 1 (default: drawn, recorded).")
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Ensemble members per UNet and VAE call; 0 = the fastest for the device "
            "(CUDA: as many as memory holds)."
        ),
    ] = 0,
    permute_classes: PermuteClassesOption = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto).")] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            help="Resume a run: skip images whose JSON in the output folder records the same "
            "input, classes, model and settings (any seed when --seed is not given); others are "
            "segmented again. Without --output it implies --exist-ok."
        ),
    ] = False,
) -> None:
    """Segment images into the given classes; writes labels, overlay, uncertainty and JSON."""
    for name, value in (
        ("--ensemble-size", ensemble_size),
        ("--denoise-steps", denoise_steps),
    ):
        if value is not None and value < 1:
            raise fail(f"{name} must be at least 1, got {value}")
    if batch_size < 0:
        raise fail(f"--batch-size must be 0 (automatic) or more, got {batch_size}")
    if processing_res is not None and processing_res < 0:
        raise fail(f"--processing-res must be 0 (native) or more, got {processing_res}")
    from segdiff.class_lists import resolve_classes
    from segdiff.inference import check_seed, collect_images, printable_path
    from segdiff.run_folder import next_run_dir

    check_seed(seed)
    class_names = resolve_classes(classes)
    images, left_out = collect_images(inputs)
    if output is None:
        base = INFER_RUNS / _run_name(inputs[0])
        output = base if exist_ok or skip_existing else next_run_dir(base)
    check_output_folder(output)

    from segdiff.inference import infer_settings, segment_files
    from segdiff.model.loading import load_pipeline

    pipe, notes = load_pipeline(model, device, half_precision)
    for note in notes:
        console.print(note, markup=False)
    settings = infer_settings(
        pipe,
        model,
        denoise_steps=denoise_steps,
        ensemble_size=ensemble_size,
        processing_res=processing_res,
        output_processing_res=output_processing_res,
        batch_size=batch_size,
        permute_classes=permute_classes,
        seed=seed,
    )
    console.print(f"Writing to {output}", markup=False)
    if settings.ensemble_size == 1:
        console.print(
            "Note: with one ensemble member uncertainty is not measured, so no uncertainty "
            "maps are written (--ensemble-size 2 or more measures it).",
            markup=False,
        )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("segmenting", total=len(images))

        def on_done(path: Path, error: str | None) -> None:
            if error:
                progress.console.print(f"skipped {path}: {error}", markup=False, style="red")
            progress.advance(task)

        try:
            run = segment_files(
                pipe,
                images,
                class_names,
                output,
                settings,
                skip_existing,
                on_done,
                seed_given=seed is not None,
            )
        except KeyboardInterrupt:
            raise interrupted(
                f"The images finished so far are in {output}: continue with the same command "
                f"and --output {output} --skip-existing."
            ) from None
    failures = {**left_out, **run.failures}
    total = len(images) + len(left_out)
    summary = f"{total - len(failures)} of {total} images segmented into {output}"
    if skip_existing:
        summary += (
            f" ({len(run.skipped)} done earlier with the same settings were skipped, "
            f"{len(run.redone)} done with other classes or settings, or incomplete, were segmented "
            "again)"
        )
    console.print(summary, markup=False)
    if failures:
        raise fail(
            f"{len(failures)} of {total} images could not be segmented: "
            + "; ".join(f"{printable_path(path)}: {why}" for path, why in failures.items())
        )


def _run_name(first_input: str) -> str:
    """The default run name: the first input's file or folder name, without glob patterns."""
    parts = [part for part in Path(first_input).parts if not glob.has_magic(part)]
    name = Path(parts[-1]).stem if parts else ""
    # isprintable() is False for the stand-ins of bytes that are not UTF-8, too
    return name if name not in ("", "..") and name.isprintable() else "infer"
