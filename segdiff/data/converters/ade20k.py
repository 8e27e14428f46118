"""ADE20K SceneParsing (ADEChallengeData2016) -> ADE-150.

Annotation PNGs hold 0..150: 0 is "other objects" (ignored), k is class k - 1 in the order of
``objectInfo150.txt``.
"""

from pathlib import Path

from segdiff.data.converters.common import (
    Converter,
    find_dataset_dir,
    layout_error,
    paired_png_jobs,
    read_lines,
)
from segdiff.data.writer import Job

LAYOUT = (
    "ADEChallengeData2016/ with images/{training,validation}/<id>.jpg, "
    "annotations/{training,validation}/<id>.png (values 0..150) and objectInfo150.txt "
    "(ROOT may be ADEChallengeData2016 or its parent)"
)
SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def find_jobs(root: Path, split: str, benchmark: str) -> list[Job]:
    ade = find_dataset_dir(root, ("", "ADEChallengeData2016"), ("images", "annotations"))
    if ade is None:
        raise layout_error("ade20k", root, LAYOUT)
    _check_object_info(ade / "objectInfo150.txt", root)
    images = ade / "images" / SPLIT_FOLDERS[split]
    if not images.is_dir():
        raise layout_error("ade20k", root, LAYOUT, f"the split folder {images} is missing")
    return paired_png_jobs(images, ade / "annotations" / SPLIT_FOLDERS[split], benchmark)


def _check_object_info(path: Path, root: Path) -> None:
    """objectInfo150.txt (a header + one row per class) must list 150 classes."""
    if not path.is_file():
        raise layout_error("ade20k", root, LAYOUT, f"{path} is missing")
    rows = len(read_lines(path)) - 1
    if rows != 150:
        raise layout_error(
            "ade20k", root, LAYOUT, f"{path} lists {rows} classes, not the 150 of ADE-150"
        )


CONVERTER = Converter(dataset="ade20k", layout=LAYOUT, benchmarks=("ade150",), find_jobs=find_jobs)
