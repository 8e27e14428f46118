"""Writing the prepared dataset format (docs/prepared-format.md); converters only say how to
read one sample.

A converter turns each source sample into a `Job`: an output id plus a picklable function
that returns the image (a file to hard-link or copy, never re-encoded, or generated pixels
to save as PNG) and its label map in vocabulary ids. `PreparedWriter.write_split` runs the
jobs in worker processes, depth-codes each mask with the image's own class list (the
vocabulary classes present, in vocabulary order) and writes every file atomically.

Resuming: the main process appends one JSON line per finished image to
``<split>/.journal.jsonl`` (its image file, class list and pixel counts) after the worker has
written the image and the mask. An image counts as finished when its journal entry exists
and its mask and image files are in place; ``text.json`` and the path lists are rebuilt from
the journal at the end of every run, so a rerun skips finished images and loses nothing.
"""

import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from segdiff import depth_coding
from segdiff.console import console as default_console
from segdiff.data.prepared import FORMAT_VERSION
from segdiff.errors import DiskFullError, SegDiffInputError
from segdiff.imageio import (
    IMAGE_READ_ERRORS,
    atomic_path,
    image_read_error,
    remove_stale_temporaries,
    reporting_disk_full,
    save_json,
    save_png,
    save_text,
)

JOURNAL = ".journal.jsonl"
MAX_ID_BYTES = 200
"""Longest image id: file names hold 255 bytes, and temporaries add about 40 to an id."""
PR_SET_PDEATHSIG = 1
"""prctl option: the signal a process gets when its parent dies (Linux)."""


@dataclass(frozen=True)
class Converted:
    """One sample read from its source."""

    labels: np.ndarray
    """HxW vocabulary ids (any unsigned int type), depth_coding.IGNORE for ignored pixels."""
    image: Path | np.ndarray
    """The source image file (linked or copied as is) or HxWx3 uint8 pixels (saved as PNG)."""


@dataclass(frozen=True)
class Job:
    """One image to prepare."""

    name: str
    """Output id: the files are ``images/<name>.<ext>`` and ``masks/<name>.png``."""
    convert: Callable[[], Converted]
    """Reads the sample; must be picklable (a functools.partial of a module-level function).
    Raises SegDiffInputError for a missing or corrupt file, which skips the image."""


@dataclass
class SplitSummary:
    """What one `write_split` call did, for the report at the end."""

    split: str
    images: int = 0
    """Images in the split now, earlier runs included."""
    written: int = 0
    resumed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(job name, reason) of every skipped image."""
    classes_seen: set[str] = field(default_factory=set)
    ignored_pixels: int = 0
    total_pixels: int = 0

    @property
    def ignored_fraction(self) -> float:
        return self.ignored_pixels / self.total_pixels if self.total_pixels else 0.0


class PreparedWriter:
    """Writes ``out/meta.json`` and splits of one dataset + benchmark."""

    def __init__(
        self,
        out: str | Path,
        dataset: str,
        benchmark: str,
        vocabulary: Sequence[str],
        options: dict[str, Any] | None = None,
    ) -> None:
        """Create ``out`` or check that it already holds the same dataset and benchmark.

        ``options`` are generator settings (e.g. the shapes seed) that must not change between
        runs into the same folder; they are stored in meta.json.
        """
        self.out = Path(out).resolve()
        self.meta = {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "benchmark": benchmark,
            "vocabulary": list(vocabulary),
            "splits": {},
        }
        if options:
            self.meta["options"] = options
        meta_path = self.out / "meta.json"
        if meta_path.is_file():
            try:
                previous = json.loads(meta_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise SegDiffInputError(
                    f"{meta_path} is corrupt ({err}); use a new --output"
                ) from err
            mismatched = [
                key for key in self.meta if key != "splits" and previous.get(key) != self.meta[key]
            ]
            if mismatched:
                raise SegDiffInputError(
                    f"{self.out} already holds a prepared dataset with a different "
                    f"{', '.join(mismatched)} (dataset {previous.get('dataset')!r}, benchmark "
                    f"{previous.get('benchmark')!r}); use another --output folder."
                )
            self.meta["splits"] = previous.get("splits", {})
        elif self.out.exists() and not self.out.is_dir():
            raise SegDiffInputError(f"--output {self.out} exists and is not a folder")
        save_json(self.meta, meta_path)

    def write_split(
        self,
        split: str,
        jobs: Sequence[Job],
        workers: int = 1,
        console: Console | None = None,
    ) -> SplitSummary:
        """Prepare ``jobs`` into ``out/<split>``, skipping images finished by an earlier run."""
        duplicates = sorted(
            n for n, count in Counter(job.name for job in jobs).items() if count > 1
        )
        if duplicates:
            raise SegDiffInputError(f"several source images share the ids {duplicates[:5]}")
        summary = SplitSummary(split=split)
        named = []
        for job in jobs:
            problem = id_problem(job.name)
            if problem:
                summary.failures.append((job.name, problem))
            else:
                named.append(job)
        split_dir = self.out / split
        with reporting_disk_full(split_dir):
            for folder in (self.out, split_dir, split_dir / "images", split_dir / "masks"):
                folder.mkdir(parents=True, exist_ok=True)
                remove_stale_temporaries(folder)
        journal = _read_journal(split_dir)
        # Rewritten whole so that a line cut short by a crash cannot swallow the next entry.
        save_text(
            "".join(json.dumps(entry) + "\n" for entry in journal.values()), split_dir / JOURNAL
        )
        todo = [job for job in named if not _is_finished(split_dir, journal.get(job.name))]
        summary.resumed = len(named) - len(todo)

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or default_console,
        )
        tasks = [(job, split_dir, len(self.meta["vocabulary"])) for job in todo]
        with (
            _mapper(workers, len(tasks)) as run,
            reporting_disk_full(split_dir / JOURNAL),
            (split_dir / JOURNAL).open("a", encoding="utf-8") as journal_file,
            progress,
        ):
            bar = progress.add_task(f"{split}: {len(todo)} to do", total=len(todo))
            for outcome in run(_prepare_one, tasks):
                if "error" in outcome:
                    summary.failures.append((outcome["name"], outcome["error"]))
                else:
                    journal[outcome["name"]] = outcome
                    journal_file.write(json.dumps(outcome) + "\n")
                    journal_file.flush()
                    summary.written += 1
                progress.advance(bar)

        finished = [
            entry for name, entry in sorted(journal.items()) if _is_finished(split_dir, entry)
        ]
        for entry in finished:
            summary.classes_seen.update(self.meta["vocabulary"][i] for i in entry["classes"])
            summary.ignored_pixels += entry["ignored"]
            summary.total_pixels += entry["pixels"]
        summary.images = len(finished)
        self._write_index(split_dir, finished)
        self.meta["splits"][split] = len(finished)
        save_json(self.meta, self.out / "meta.json")
        return summary

    def _write_index(self, split_dir: Path, finished: list[dict[str, Any]]) -> None:
        vocabulary = self.meta["vocabulary"]
        finished = sorted(finished, key=lambda entry: entry["image"])
        save_json(
            {e["image"]: [vocabulary[i] for i in e["classes"]] for e in finished},
            split_dir / "text.json",
        )
        save_text(
            "".join(f"{split_dir / 'images' / e['image']}\n" for e in finished),
            split_dir / "img_list.txt",
        )
        save_text(
            "".join(f"{split_dir / 'masks' / (e['name'] + '.png')}\n" for e in finished),
            split_dir / "gt_list.txt",
        )


def id_problem(name: str) -> str | None:
    """Why an image id cannot name output files, or None. An id is one plain file stem: ids
    read from a dataset's split list must never lead a write outside the output folder."""
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        return f"the id {name!r} is not a plain file name (it holds a path or is empty)"
    if name.startswith("."):
        return f"the id {name!r} starts with a dot (hidden names are left to temporary files)"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_ID_BYTES:
        return f"the id {name[:40]!r}... is longer than {MAX_ID_BYTES} bytes"
    return None


@contextmanager
def _mapper(workers: int, num_tasks: int) -> Iterator[Callable]:
    """Yield ``run(function, items)``: a process pool's unordered map, or the builtin map.

    Leaving the block (done, Ctrl-C, an error) terminates the workers; they ignore Ctrl-C
    themselves, so an interrupt prints no traceback per worker, and on Linux they die with
    the main process even when it is killed.
    """
    if workers <= 1 or num_tasks <= 1:
        yield map
        return
    # Chunks amortise the inter-process traffic without starving the bar of updates.
    chunksize = max(1, min(16, num_tasks // (workers * 8)))
    linux = sys.platform.startswith("linux")
    # fork: the workers are the main process's own children, so they can watch it
    context = multiprocessing.get_context("fork" if linux else None)
    with context.Pool(
        min(workers, num_tasks), initializer=_init_worker, initargs=(os.getpid(), linux)
    ) as pool:
        yield lambda function, items: pool.imap_unordered(function, items, chunksize)


def _init_worker(parent: int, linux: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if linux:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the main process died before the call above
            os._exit(1)


def _prepare_one(task: tuple[Job, Path, int]) -> dict[str, Any]:
    """Worker: read one sample, write its image and mask; the journal entry or an error."""
    job, split_dir, vocabulary_size = task
    try:
        converted = job.convert()
        labels = np.asarray(converted.labels)
        present, mask = depth_code(labels, vocabulary_size)
        image_name = _write_image(converted.image, split_dir / "images", job.name, labels.shape)
    except DiskFullError:
        raise  # stops the whole run, unlike one unreadable image
    except SegDiffInputError as err:
        return {"name": job.name, "error": str(err)}
    save_png(mask, split_dir / "masks" / f"{job.name}.png")
    return {
        "name": job.name,
        "image": image_name,
        "classes": present.tolist(),
        "ignored": int(np.count_nonzero(labels == depth_coding.IGNORE)),
        "pixels": int(labels.size),
    }


def depth_code(labels: np.ndarray, vocabulary_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary ids -> (ids present, sorted; uint8 depth-coded mask for that class list)."""
    labels = labels.astype(np.uint16, copy=False)
    counts = np.bincount(labels.ravel(), minlength=depth_coding.IGNORE + 1)
    counts[depth_coding.IGNORE] = 0
    present = np.flatnonzero(counts)
    if present.size and present[-1] >= vocabulary_size:
        raise ValueError(f"label {present[-1]} is outside the vocabulary of {vocabulary_size}")
    if present.size > depth_coding.MAX_CLASSES:
        raise SegDiffInputError(
            f"{present.size} classes in one image; a mask codes at most {depth_coding.MAX_CLASSES}"
        )
    if present.size == 0:
        return present, np.zeros(labels.shape, dtype=np.uint8)
    local = depth_coding.recode(labels, {int(i): k for k, i in enumerate(present)}, present.size)
    return present, depth_coding.encode(local, present.size)


def _write_image(
    image: Path | np.ndarray, images_dir: Path, name: str, label_shape: tuple[int, ...]
) -> str:
    """Put the image in place (hard link, else copy; generated pixels as PNG); its file name."""
    if isinstance(image, np.ndarray):
        if image.shape[:2] != label_shape:
            raise ValueError(f"image {image.shape} and labels {label_shape} differ in size")
        save_png(image, images_dir / f"{name}.png")
        return f"{name}.png"
    try:
        with Image.open(image) as opened:
            width, height = opened.size
    except FileNotFoundError as err:
        raise SegDiffInputError(f"image not found: {image}") from err
    except IMAGE_READ_ERRORS as err:
        raise image_read_error(image, err) from err
    if (height, width) != label_shape:
        raise SegDiffInputError(
            f"annotation size {label_shape[1]}x{label_shape[0]} differs from the image "
            f"{image} ({width}x{height})"
        )
    dest = images_dir / f"{name}{image.suffix}"
    with atomic_path(dest) as tmp:
        try:  # a hard link keeps the source's mode (it is the same file); a copy gets the umask's
            os.link(image, tmp)
        except OSError:
            shutil.copyfile(image, tmp)
    return dest.name


def _read_journal(split_dir: Path) -> dict[str, dict[str, Any]]:
    """Entries of earlier runs by job name; a line cut short by a crash is ignored."""
    path = split_dir / JOURNAL
    entries: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[entry["name"]] = entry
    return entries


def _is_finished(split_dir: Path, entry: dict[str, Any] | None) -> bool:
    return (
        entry is not None
        and (split_dir / "masks" / f"{entry['name']}.png").is_file()
        and (split_dir / "images" / entry["image"]).is_file()
    )
