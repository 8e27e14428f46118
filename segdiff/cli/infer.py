"""`segdiff infer`: segment images into any list of classes."""

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from segdiff.cli.common import console, fail, reports_input_errors


@reports_input_errors
def command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    classes: Annotated[
        str,
        typer.Option(
            "--classes",
            "-c",
            help='Class names: "cat,sofa,window", a file with one name a line, or a built-in '
            "vocabulary (voc21, ade150, shapes, ...).",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(help="segdiff model folder or hub id (default: the bundled tiny model)."),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "outputs"
    ),
    ensemble_size: Annotated[
        int | None, typer.Option(help="Denoising runs per image, combined by vote.")
    ] = None,
    denoise_steps: Annotated[int | None, typer.Option(help="DDIM steps per run.")] = None,
    processing_res: Annotated[
        int | None, typer.Option(help="Long edge to process at; 0 = native size.")
    ] = None,
    output_processing_res: Annotated[
        bool, typer.Option(help="Write maps at the processing size instead of the input size.")
    ] = False,
    half_precision: Annotated[bool, typer.Option(help="fp16 weights (CUDA only).")] = False,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: drawn, recorded).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Ensemble members per UNet batch; 0 = as many as memory holds.")
    ] = 0,
    permute_classes: Annotated[
        bool, typer.Option(help="Shuffle the class order for each ensemble member.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: auto).")] = None,
    skip_existing: Annotated[
        bool, typer.Option(help="Skip images whose outputs already exist (resume a run).")
    ] = False,
) -> None:
    """Segment images into the given classes; writes labels, overlay, uncertainty and JSON."""
    from segdiff.inference import collect_images, infer_settings, resolve_classes, segment_files
    from segdiff.model.loading import load_pipeline

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
    class_names = resolve_classes(classes)
    images = collect_images(inputs)

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

        failures = segment_files(
            pipe, images, class_names, output, settings, skip_existing, on_done
        )
    done = len(images) - len(failures)
    console.print(f"{done} of {len(images)} images segmented into {output}", markup=False)
    if failures:
        raise fail(
            f"{len(failures)} of {len(images)} images could not be segmented: "
            + "; ".join(f"{path.name}: {message}" for path, message in failures.items())
        )
