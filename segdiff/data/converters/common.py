"""What every converter shares: its description, finding the dataset folder, label lookup."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segdiff.data.writer import Converted, Job
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.imageio import IMAGE_READ_ERRORS, IMAGE_SUFFIXES, image_read_error
from segdiff.vocabularies import get_vocabulary, source_ids

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Converter:
    """How to turn one public dataset into prepared-format jobs."""

    dataset: str
    layout: str
    """The on-disk layout ROOT must have, for error messages."""
    benchmarks: tuple[str, ...]
    """Vocabularies this dataset can be prepared for; the first is the default."""
    find_jobs: Callable[[Path, str, str], list[Job]]
    """(root, split, benchmark) -> one job per image, sorted by id. Raises SegDiffInputError
    naming the expected layout when the folder does not hold the dataset or the split."""
    vocabulary: Callable[[Path, str], tuple[str, ...]] = lambda root, benchmark: (
        get_vocabulary(benchmark).classes
    )
    """(root, benchmark) -> class names; only datasets with a data-defined vocabulary need it."""
    options: Callable[[str], dict[str, Any] | None] = lambda benchmark: None
    """benchmark -> how the preparation departs from the source data (e.g. a resize), recorded
    in meta.json: a folder prepared otherwise is not resumed into."""


def find_dataset_dir(
    root: Path, candidates: tuple[str, ...], markers: tuple[str, ...]
) -> Path | None:
    """The first of ``root/<candidate>`` that holds every marker path, or None."""
    for candidate in candidates:
        folder = root / candidate
        if all((folder / marker).exists() for marker in markers):
            return folder
    return None


def layout_error(dataset: str, root: Path, layout: str, problem: str = "") -> SegDiffInputError:
    """A one-paragraph error naming the layout ``dataset`` expects under ``root``."""
    problem = problem or f"{root} does not hold the {dataset} dataset"
    return SegDiffInputError(f"{problem}. Expected layout: {layout}")


@cache
def lookup_table(benchmark: str) -> np.ndarray:
    """Raw annotation value -> vocabulary id (uint16); the last entry, IGNORE, catches the rest.

    Index with `remap`, which clips larger values onto that last entry.
    """
    ids = source_ids(benchmark)
    table = np.full(max(ids) + 2, IGNORE, dtype=np.uint16)
    table[list(ids)] = np.arange(len(ids))
    return table


def remap(raw: np.ndarray, benchmark: str) -> np.ndarray:
    """Raw annotation values -> vocabulary ids; values outside the benchmark become IGNORE."""
    table = lookup_table(benchmark)
    raw = np.asarray(raw)
    if raw.dtype.kind not in "ui":
        raise SegDiffInputError(f"annotation values must be integers, got {raw.dtype}")
    beyond = len(table) - 1
    if raw.dtype.kind == "i":
        raw = np.where(raw < 0, beyond, raw)
    return table[np.minimum(raw, beyond)]


def read_index_png(path: Path) -> np.ndarray:
    """The stored values of a single-channel annotation PNG (palette indices, not colours)."""
    try:
        with Image.open(path) as image:
            mode, values = image.mode, np.asarray(image)
    except FileNotFoundError as err:
        raise SegDiffInputError(f"annotation not found: {path}") from err
    except IMAGE_READ_ERRORS as err:
        raise image_read_error(path, err, "annotation") from err
    if mode not in ("P", "L", "I;16", "I"):
        raise SegDiffInputError(
            f"annotation {path} is a {mode} image; expected a single-channel "
            "(palette or gray) PNG of class indices"
        )
    return values


def load_mat(path: Path) -> dict[str, np.ndarray]:
    """The variables of a MATLAB file (v4 to v7.2)."""
    if not path.is_file():
        raise SegDiffInputError(f"annotation not found: {path}")
    import scipy.io  # here, not at the top: the command line starts faster without it

    try:
        return scipy.io.loadmat(path)
    except (
        OSError,
        ValueError,
        TypeError,
        NotImplementedError,
        scipy.io.matlab.MatReadError,
    ) as err:
        raise SegDiffInputError(f"cannot read annotation {path}: {err}") from err


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a text file, stripped (split lists, label lists)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def paired_png_jobs(images: Path, annotations: Path, benchmark: str) -> list[Job]:
    """A job for every image in ``images``, its annotation ``annotations/<id>.png``."""
    return [
        Job(path.stem, partial(read_png_sample, path, annotations / f"{path.stem}.png", benchmark))
        for path in sorted(images.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]


def read_png_sample(image: Path, annotation: Path, benchmark: str) -> Converted:
    return Converted(labels=remap(read_index_png(annotation), benchmark), image=image)
