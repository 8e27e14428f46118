"""PASCAL-Context (VOC2010 images + trainval/*.mat LabelMaps) -> PC-59 or PC-459.

``LabelMap`` (uint16) holds ``labels.txt`` ids 1..459. PC-459 maps id k to class k - 1;
PC-59 keeps its 59 frequent ids (standard order, sorted by id) and ignores the rest. A 0,
should one occur, is ignored. Val is the standard 5,104 images (the id list ships in
``segdiff/resources/pcontext_val_ids.txt``); train is every other annotated image.
"""

from functools import cache, partial
from importlib import resources
from pathlib import Path

import numpy as np

from segdiff.data.converters.common import (
    Converter,
    find_dataset_dir,
    layout_error,
    load_mat,
    read_lines,
    remap,
)
from segdiff.data.writer import Converted, Job
from segdiff.errors import SegDiffInputError

LAYOUT = (
    "VOCdevkit/VOC2010/ with JPEGImages/<id>.jpg, trainval/<id>.mat (variable LabelMap) and "
    "labels.txt (459 lines '<id>: <name>') (ROOT may be VOC2010, VOCdevkit or its parent)"
)
NUM_LABELS = 459


def find_jobs(root: Path, split: str, benchmark: str) -> list[Job]:
    context = find_dataset_dir(
        root, ("", "VOC2010", "VOCdevkit/VOC2010"), ("JPEGImages", "trainval", "labels.txt")
    )
    if context is None:
        raise layout_error("pcontext", root, LAYOUT)
    _check_labels_txt(context / "labels.txt", root)
    val_ids = set(val_image_ids())
    if split == "val":
        ids = val_ids
    else:
        ids = {path.stem for path in (context / "trainval").glob("*.mat")} - val_ids
    return [
        Job(
            i,
            partial(
                read_sample,
                context / "JPEGImages" / f"{i}.jpg",
                context / "trainval" / f"{i}.mat",
                benchmark,
            ),
        )
        for i in sorted(ids)
    ]


@cache
def val_image_ids() -> tuple[str, ...]:
    """The 5,104 ids of the standard PASCAL-Context val split."""
    text = (resources.files("segdiff") / "resources" / "pcontext_val_ids.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def read_sample(image: Path, annotation: Path, benchmark: str) -> Converted:
    variables = load_mat(annotation)
    if "LabelMap" not in variables:
        raise SegDiffInputError(f"annotation {annotation} has no LabelMap variable")
    return Converted(labels=remap(np.asarray(variables["LabelMap"]), benchmark), image=image)


def _check_labels_txt(path: Path, root: Path) -> None:
    """labels.txt must be the 459-class list, or the ids mean something else."""
    ids = {line.partition(":")[0].strip() for line in read_lines(path)}
    if ids != {str(i) for i in range(1, NUM_LABELS + 1)}:
        raise layout_error(
            "pcontext",
            root,
            LAYOUT,
            f"{path} does not list the 459 PASCAL-Context ids 1..459 (found {len(ids)} ids)",
        )


CONVERTER = Converter(
    dataset="pcontext", layout=LAYOUT, benchmarks=("pc59", "pc459"), find_jobs=find_jobs
)
