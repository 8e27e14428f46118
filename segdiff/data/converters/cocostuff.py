"""COCO-Stuff 164k (COCO 2017 images + stuffthingmaps PNGs) -> COCO-Stuff-171.

The PNGs hold 0..181 (labels.txt id - 1) and 255 for unlabeled; the 171 values in use map to
train ids in order, everything else is ignored.
"""

from pathlib import Path

from segdiff.data.converters.common import (
    Converter,
    find_dataset_dir,
    layout_error,
    paired_png_jobs,
)
from segdiff.data.writer import Job

LAYOUT = (
    "a COCO-Stuff folder with images/{train2017,val2017}/<id>.jpg and "
    "annotations/{train2017,val2017}/<id>.png (stuffthingmaps, values 0..181 and 255)"
)
SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}


def find_jobs(root: Path, split: str, benchmark: str) -> list[Job]:
    coco = find_dataset_dir(
        root, ("", "coco_stuff164k", "coco-stuff", "cocostuff"), ("images", "annotations")
    )
    if coco is None:
        raise layout_error("cocostuff", root, LAYOUT)
    images = coco / "images" / SPLIT_FOLDERS[split]
    if not images.is_dir():
        raise layout_error("cocostuff", root, LAYOUT, f"the split folder {images} is missing")
    return paired_png_jobs(images, coco / "annotations" / SPLIT_FOLDERS[split], benchmark)


CONVERTER = Converter(
    dataset="cocostuff", layout=LAYOUT, benchmarks=("cocostuff171",), find_jobs=find_jobs
)
