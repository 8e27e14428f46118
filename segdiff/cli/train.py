"""`segdiff train`: fine-tune a segdiff model from a recipe.

One process: ``segdiff train RECIPE.yaml``. Several GPUs or nodes: ``accelerate launch -m
segdiff train RECIPE.yaml`` runs the same command in every process.
"""

from pathlib import Path
from typing import Annotated

import typer

from segdiff.cli.common import console, parse_overrides, reports_input_errors
from segdiff.errors import SegDiffInputError

RUNS_DIR = Path("runs") / "train"


@reports_input_errors
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
    from segdiff.training.loop import train

    resolved = load_recipe(recipe, parse_overrides(overrides or []))
    # Every process must train into the same folder, so the main process picks it.
    run_dir, checkpoint = main_process_decides(lambda: resolve_run(resolved.name, output, resume))
    if checkpoint is not None:
        console.print(f"Resuming from {checkpoint}")
    console.print(f"Run folder: {run_dir}")
    model = train(resolved, run_dir, checkpoint)
    console.print(f"Trained model: {model}")


def resolve_run(name: str, output: Path | None, resume: str | None) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None) for the given options."""
    from segdiff.evaluation.report import next_run_dir
    from segdiff.training import checkpoints

    if resume is None:
        if output is None:
            return next_run_dir(RUNS_DIR / name), None
        if (output / "recipe.yaml").exists():
            raise SegDiffInputError(
                f"{output} already holds a training run; continue it with --resume latest or "
                "choose another --output"
            )
        return output, None
    if resume == "latest":
        run_dir = output if output is not None else _newest_run(name)
        checkpoint = checkpoints.latest_checkpoint(run_dir)
        if checkpoint is None:
            raise SegDiffInputError(f"--resume latest: {run_dir} has no finished checkpoint")
        return run_dir, checkpoint
    path = Path(resume)
    if (path / "checkpoint.json").is_file():
        return path.parent.parent, path
    checkpoint = checkpoints.latest_checkpoint(path)
    if checkpoint is None:
        raise SegDiffInputError(
            f"--resume {resume}: not a checkpoint (RUN/checkpoints/step-N with "
            "checkpoint.json) nor a run folder with checkpoints"
        )
    return path, checkpoint


def _newest_run(name: str) -> Path:
    """The highest-numbered existing runs/train/<name>[-N]."""
    runs = [RUNS_DIR / name] + sorted(RUNS_DIR.glob(f"{name}-*"), key=lambda p: p.name)
    numbered = {}
    for run in runs:
        suffix = run.name[len(name) :].lstrip("-")
        if run.is_dir() and (suffix == "" or suffix.isdigit()):
            numbered[int(suffix or 1)] = run
    if not numbered:
        raise SegDiffInputError(f"--resume latest: no run of {name!r} under {RUNS_DIR}")
    return numbered[max(numbered)]
