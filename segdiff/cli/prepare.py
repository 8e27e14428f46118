"""`segdiff prepare`: convert a public benchmark, or generate shapes, into the prepared format."""

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segdiff.cli.common import console, reports_input_errors
from segdiff.data import shapes
from segdiff.data.converters import CONVERTERS, SPLITS
from segdiff.data.writer import Job, PreparedWriter, SplitSummary
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

DATASETS = (*CONVERTERS, "shapes")
MAX_FAILURES_SHOWN = 20


@reports_input_errors
def command(
    dataset: Annotated[str, typer.Argument(help=f"One of: {', '.join(DATASETS)}.")],
    root: Annotated[
        Path | None, typer.Argument(help="The dataset's folder (not used for shapes).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the prepared dataset to.")] = (
        ...
    ),
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
    """Convert DATASET at ROOT (or generate shapes) into OUT; resumable, parallel.

    Each image gets a depth-coded mask of the benchmark classes it contains.

    Unreadable files are reported and skipped, and the run then exits with code 1.
    """
    if dataset not in DATASETS:
        raise SegDiffInputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in (*SPLITS, "all"):
        raise SegDiffInputError(f"--split must be train, val or all, got {split!r}")
    if workers < 1 or (limit is not None and limit < 1):
        raise SegDiffInputError("--workers and --limit must be at least 1")
    splits = SPLITS if split == "all" else (split,)
    options = None
    if dataset == "shapes":
        if root is not None:
            raise SegDiffInputError("shapes are generated; give no ROOT, only --out")
        if benchmark not in (None, "shapes"):
            raise SegDiffInputError(f"shapes has only the 'shapes' vocabulary, not {benchmark!r}")
        benchmark = "shapes"
        jobs, options = _shapes_jobs(splits, train_size, val_size, size, seed)
        vocabulary = get_vocabulary("shapes").classes
    else:
        if any(v is not None for v in (train_size, val_size, size, seed)):
            raise SegDiffInputError(
                "--train-size, --val-size, --size and --seed only apply to shapes"
            )
        benchmark, jobs = _find_jobs(dataset, root, splits, benchmark)
        vocabulary = CONVERTERS[dataset].vocabulary(root.resolve(), benchmark)

    writer = PreparedWriter(out, dataset, benchmark, vocabulary, options)
    summaries = [
        writer.write_split(s, split_jobs[:limit], workers, console)
        for s, split_jobs in jobs.items()
    ]
    _report(summaries, writer.out, len(vocabulary))
    if any(summary.failures for summary in summaries):
        raise typer.Exit(code=1)


def _find_jobs(
    dataset: str, root: Path | None, splits: tuple[str, ...], benchmark: str | None
) -> tuple[str, dict[str, list[Job]]]:
    """The benchmark and the jobs of every split found; a clear error if none is found.

    With several splits asked for, a split missing on disk (many downloads hold only val) is
    skipped with a note.
    """
    converter = CONVERTERS[dataset]
    benchmark = benchmark or converter.benchmarks[0]
    if benchmark not in converter.benchmarks:
        raise SegDiffInputError(
            f"{dataset} can be prepared for {', '.join(converter.benchmarks)}, not {benchmark!r}"
        )
    if root is None or not root.exists():
        problem = "ROOT is required" if root is None else f"ROOT {root} does not exist"
        raise SegDiffInputError(f"{problem}. {dataset} expects {converter.layout}")
    jobs: dict[str, list[Job]] = {}
    errors = []
    for split in splits:
        try:
            found = converter.find_jobs(root.resolve(), split, benchmark)
        except SegDiffInputError as err:
            errors.append(err)
            continue
        if found:
            jobs[split] = found
        else:
            errors.append(SegDiffInputError(f"no {split} images found in {root}"))
    if not jobs:
        raise errors[0]
    for err in errors:
        console.print(f"Note: skipping a split: {err}", markup=False, style="yellow")
    return benchmark, jobs


def _shapes_jobs(
    splits: tuple[str, ...],
    train_size: int | None,
    val_size: int | None,
    size: str | None,
    seed: int | None,
) -> tuple[dict[str, list[Job]], dict]:
    """The shapes jobs of every split, and the generator options to record in meta.json."""
    counts = {"train": train_size, "val": val_size}
    for split, count in counts.items():
        if count is None:
            counts[split] = shapes.DEFAULT_COUNTS[split]
        elif count < 1:
            raise SegDiffInputError(f"--{split}-size must be at least 1, got {count}")
    side = _parse_size(size)
    seed = 0 if seed is None else seed
    jobs = {split: shapes.find_jobs(split, counts[split], seed, side) for split in splits}
    return jobs, {"seed": seed, "size": [side, side] if isinstance(side, int) else list(side)}


def _parse_size(text: str | None) -> int | tuple[int, int]:
    if text is None:
        return shapes.DEFAULT_SIZE
    low, _, high = text.partition("-")
    try:
        sides = (int(low), int(high or low))
    except ValueError:
        raise SegDiffInputError(f"--size is a side or a range MIN-MAX, got {text!r}") from None
    if not 16 <= sides[0] <= sides[1] <= 4096:
        raise SegDiffInputError(f"--size must lie in 16..4096 with MIN <= MAX, got {text!r}")
    return sides[0] if sides[0] == sides[1] else sides


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
