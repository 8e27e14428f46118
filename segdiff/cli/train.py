"""`segdiff train`: fine-tune a segdiff model from a recipe.

One process: ``segdiff train RECIPE.yaml``. Several GPUs or nodes: ``accelerate launch -m
segdiff train RECIPE.yaml`` runs the same command in every process.
"""

import shlex
from pathlib import Path
from typing import Annotated

import typer

from segdiff.cli.common import (
    check_output_folder,
    console,
    fail,
    interrupted,
    parse_overrides,
    reports_input_errors,
    reports_out_of_memory,
)
from segdiff.errors import DiskFullError

MEMORY_ADVICE = (
    "Lower train.batch_size (raise train.gradient_accumulation to keep the effective batch) or "
    "data.resolution, or set train.gradient_checkpointing=true, or on a GPU "
    "train.mixed_precision=bf16; --resume latest continues from the last checkpoint."
)


@reports_input_errors
@reports_out_of_memory(MEMORY_ADVICE)
def command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (see recipes/).")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Recipe overrides KEY=VALUE, e.g. optim.lr=1e-5 data.root=PATH."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Run folder (default: runs/train/<recipe name>, then -2, ...)."
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="'latest' (the newest checkpoint of the run folder) or a checkpoint or run "
            "folder to continue from."
        ),
    ] = None,
) -> None:
    """Train a segdiff model; writes checkpoints, TensorBoard logs and RUN/model."""
    from segdiff.distributed import main_process_decides
    from segdiff.recipes import load_recipe
    from segdiff.run_folder import resolve_run
    from segdiff.training.loop import train

    check_output_folder(output)
    resolved = load_recipe(recipe, parse_overrides(overrides or []))
    # Every process must train into the same folder, so the main process picks it.
    run_dir, checkpoint = main_process_decides(lambda: resolve_run(resolved.name, output, resume))
    if checkpoint is not None:
        console.print(f"Resuming from {checkpoint}")
    console.print(f"Run folder: {run_dir}")
    again = shlex.join(
        ["segdiff", "train", str(recipe), *(overrides or []), "--output", str(run_dir)]
    )
    try:
        model = train(resolved, run_dir, checkpoint)
    except KeyboardInterrupt:
        raise interrupted(f"Continue the run with: {again} --resume latest") from None
    except DiskFullError as err:
        raise fail(f"{err}. Continue the run with: {again} --resume latest") from None
    console.print(f"Trained model: {model}")
