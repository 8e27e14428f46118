"""`segdiff prepare`: convert a public benchmark, or generate shapes, into the prepared format."""

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segdiff.cli.common import check_output_folder, console, interrupted, reports_input_errors
from segdiff.data.prepare import DATASETS, prepare_dataset
from segdiff.data.writer import SplitSummary

MAX_FAILURES_SHOWN = 20


@reports_input_errors
def command(
    dataset: Annotated[str, typer.Argument(help=f"One of: {', '.join(DATASETS)}.")],
    root: Annotated[
        Path | None, typer.Argument(help="The dataset's folder (not used for shapes).")
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", "--out", help="Folder to write the prepared dataset to."),
    ] = ...,
    split: Annotated[str, typer.Option(help="train, val or all.")] = "all",
    benchmark: Annotated[
        str | None,
        typer.Option(
            help="voc: voc21|voc20; pcontext: pc59|pc459; ade20k-full: ade847|raw "
            "(every object name, for open-vocabulary training). Default: the first."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes (default: number of CPU cores).")
    ] = os.cpu_count() or 1,
    limit: Annotated[
        int | None, typer.Option(help="Prepare at most N images per split (first by id).")
    ] = None,
    train_size: Annotated[int | None, typer.Option(help="shapes: train images [2000].")] = None,
    val_size: Annotated[int | None, typer.Option(help="shapes: val images [200].")] = None,
    size: Annotated[
        str | None, typer.Option(help="shapes: image side, or a range MIN-MAX [64].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="shapes: random seed [0].")] = None,
) -> None:
    """Convert DATASET at ROOT (or generate shapes) into OUTPUT; resumable, parallel.

    Each image gets a depth-coded mask of the benchmark classes it contains.

    Unreadable files are reported and skipped, and the run then exits with code 2.
    """
    check_output_folder(output)
    try:
        result = prepare_dataset(
            dataset,
            root,
            output,
            split=split,
            benchmark=benchmark,
            workers=workers,
            limit=limit,
            train_size=train_size,
            val_size=val_size,
            size=size,
            seed=seed,
            console=console,
        )
    except KeyboardInterrupt:
        raise interrupted(
            "The images finished so far are kept: run the same command again to continue."
        ) from None
    _report(result.splits, result.out, result.vocabulary_size)
    if result.failures:
        raise typer.Exit(code=2)


def _report(summaries: list[SplitSummary], out: Path, vocabulary_size: int) -> None:
    table = Table(title=f"Prepared {out}")
    for column in ("split", "images", "new", "resumed", "skipped", "classes seen", "ignored px"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for s in summaries:
        table.add_row(
            s.split,
            str(s.images),
            str(s.written),
            str(s.resumed),
            str(len(s.failures)),
            f"{len(s.classes_seen)}/{vocabulary_size}",
            f"{100 * s.ignored_fraction:.1f}%",
        )
    console.print(table)
    failures = [(s.split, name, reason) for s in summaries for name, reason in s.failures]
    if failures:
        plural = "s" if len(failures) != 1 else ""
        console.print(f"Skipped {len(failures)} image{plural}:", style="red")
        for split, name, reason in failures[:MAX_FAILURES_SHOWN]:
            console.print(f"  {split}/{name}: {reason}", markup=False)
        if len(failures) > MAX_FAILURES_SHOWN:
            console.print(f"  ... and {len(failures) - MAX_FAILURES_SHOWN} more")
