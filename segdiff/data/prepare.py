"""Preparing a dataset: what `segdiff prepare` does, callable from Python.

A public benchmark is converted by its converter (``segdiff.data.converters``), the synthetic
shapes are generated; either way `PreparedWriter` writes the prepared format (docs/prepared-
format.md), resumably and in parallel.
"""

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from segdiff.console import console as default_console
from segdiff.data.converters import CONVERTERS, SPLITS
from segdiff.data.writer import Job, PreparedWriter, SplitSummary
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import get_vocabulary

DATASETS = (*CONVERTERS, "shapes")


@dataclass
class PrepareResult:
    out: Path
    vocabulary_size: int
    splits: list[SplitSummary]

    @property
    def failures(self) -> int:
        """Images skipped because they could not be read."""
        return sum(len(summary.failures) for summary in self.splits)


def prepare_dataset(
    dataset: str,
    root: str | Path | None,
    out: str | Path,
    *,
    split: str = "all",
    benchmark: str | None = None,
    workers: int = 1,
    limit: int | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    size: str | int | tuple[int, int] | None = None,
    seed: int | None = None,
    console: Console | None = None,
) -> PrepareResult:
    """Convert ``dataset`` at ``root`` (or generate shapes) into ``out``.

    ``split`` is train, val or all; ``limit`` caps the images per split (first by id).
    ``train_size``, ``val_size``, ``size`` (a side, a (min, max) range or the text
    ``"MIN-MAX"``) and ``seed`` apply to shapes only. Unreadable images are skipped and
    counted in the result; bad arguments raise SegDiffInputError.
    """
    console = console or default_console
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
            raise SegDiffInputError("shapes are generated; give no ROOT, only --output")
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
        root = None if root is None else Path(root)
        benchmark, jobs = _find_jobs(dataset, root, splits, benchmark, console)
        vocabulary = CONVERTERS[dataset].vocabulary(root.resolve(), benchmark)
        options = CONVERTERS[dataset].options(benchmark)

    writer = PreparedWriter(out, dataset, benchmark, vocabulary, options)
    summaries = [
        writer.write_split(s, split_jobs[:limit], workers, console)
        for s, split_jobs in jobs.items()
    ]
    return PrepareResult(writer.out, len(vocabulary), summaries)


def _find_jobs(
    dataset: str,
    root: Path | None,
    splits: tuple[str, ...],
    benchmark: str | None,
    console: Console,
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
    size: str | int | tuple[int, int] | None,
    seed: int | None,
) -> tuple[dict[str, list[Job]], dict]:
    """The shapes jobs of every split, and the generator options to record in meta.json."""
    from segdiff.data import shapes  # here, not at the top: OpenCV slows the CLI's start

    counts = {"train": train_size, "val": val_size}
    for split, count in counts.items():
        if count is None:
            counts[split] = shapes.DEFAULT_COUNTS[split]
        elif count < 1:
            raise SegDiffInputError(f"--{split}-size must be at least 1, got {count}")
    side = _shapes_size(size)
    seed = 0 if seed is None else seed
    jobs = {split: shapes.find_jobs(split, counts[split], seed, side) for split in splits}
    return jobs, {"seed": seed, "size": [side, side] if isinstance(side, int) else list(side)}


def _shapes_size(size: str | int | tuple[int, int] | None) -> int | tuple[int, int]:
    """A side or a (min, max) range; text is a side or ``MIN-MAX``."""
    from segdiff.data.shapes import DEFAULT_SIZE

    if size is None:
        return DEFAULT_SIZE
    if isinstance(size, str):
        low, _, high = size.partition("-")
        try:
            sides = (int(low), int(high or low))
        except ValueError:
            raise SegDiffInputError(f"--size is a side or a range MIN-MAX, got {size!r}") from None
    else:
        sides = (size, size) if isinstance(size, int) else tuple(size)
    if not 16 <= sides[0] <= sides[1] <= 4096:
        raise SegDiffInputError(f"--size must lie in 16..4096 with MIN <= MAX, got {size!r}")
    return sides[0] if sides[0] == sides[1] else sides
