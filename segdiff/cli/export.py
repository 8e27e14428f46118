"""`segdiff export`: a trained model as a shareable diffusers folder or as checked ONNX graphs."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from segdiff.cli.common import check_output_folder, console, fail, reports_input_errors


class ExportFormat(str, Enum):
    diffusers = "diffusers"
    onnx = "onnx"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


@reports_input_errors
def command(
    model: Annotated[
        str,
        typer.Argument(
            help="A training run folder (exports RUN/model, or the latest checkpoint before "
            "there is one), a segdiff model folder, a checkpoint folder or a hub id."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", "--out", help="Folder to write the export to.")
    ],
    export_format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="diffusers: a pipeline folder with safetensors weights; onnx: onnxruntime "
            "graphs, each checked against PyTorch.",
        ),
    ] = ExportFormat.diffusers,
    dtype: Annotated[
        Precision,
        typer.Option(
            help="diffusers: fp32 weights are always written, fp16/bf16 add a variant beside "
            "them. onnx: the precision of the graphs (fp32 or fp16)."
        ),
    ] = Precision.fp32,
    overwrite: Annotated[
        bool, typer.Option(help="Replace --output if it exists and is not empty.")
    ] = False,
) -> None:
    """Export a model as a shareable diffusers folder (with model card) or as ONNX graphs."""
    check_output_folder(output)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from segdiff.export import ExportVerificationError, export_diffusers, export_onnx

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    exporter = export_diffusers if export_format is ExportFormat.diffusers else export_onnx
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("Starting", total=None)
        try:
            result = exporter(
                model,
                output,
                dtype=dtype.value,
                overwrite=overwrite,
                on_step=lambda description: progress.update(task, description=description),
            )
        except ExportVerificationError as err:  # the export's fault, not the input's: exit 1
            raise fail(str(err), code=1) from None
    if export_format is ExportFormat.onnx:
        for name, check in result["graphs"].items():
            console.print(f"{name}.onnx: max difference from PyTorch {check['max_abs_diff']:.2g}")
        console.print(f"Verified ONNX graphs ({dtype.value}) written to {output}")
    else:
        console.print(f"diffusers folder ({', '.join(result)}) written to {output}")
