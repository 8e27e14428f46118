"""Full ADE20K release (ADE20K_2021_17_01) -> ADE-847.

Each image ``<id>.jpg`` has ``<id>_seg.png`` beside it, whose pixel class is the full-ADE
index ``(R // 10) * 256 + G`` (0 = unlabeled). The 847 benchmark indices map to their train
ids; every other index is ignored. Images keep their source resolution: the published ADE-847
numbers are computed on images resized to a shorter side of 512, which evaluation can do.
"""

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segdiff.data.converters.common import Converter, find_dataset_dir, layout_error, remap
from segdiff.data.writer import Converted, Job
from segdiff.errors import SegDiffInputError

LAYOUT = (
    "ADE20K_2021_17_01/images/ADE/{training,validation}/<scene group>/<scene>/ with <id>.jpg "
    "and <id>_seg.png side by side (ROOT may be ADE20K_2021_17_01 or its parent)"
)
SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def find_jobs(root: Path, split: str, benchmark: str) -> list[Job]:
    ade = find_dataset_dir(root, ("", "ADE20K_2021_17_01"), ("images/ADE",))
    if ade is None:
        raise layout_error("ade20k-full", root, LAYOUT)
    images = ade / "images" / "ADE" / SPLIT_FOLDERS[split]
    if not images.is_dir():
        raise layout_error("ade20k-full", root, LAYOUT, f"the split folder {images} is missing")
    return [
        Job(
            path.stem, partial(read_sample, path, path.with_name(f"{path.stem}_seg.png"), benchmark)
        )
        for path in sorted(images.rglob("*.jpg"), key=lambda p: p.name)
    ]


def read_sample(image: Path, annotation: Path, benchmark: str) -> Converted:
    return Converted(labels=remap(read_class_map(annotation), benchmark), image=image)


def read_class_map(path: Path) -> np.ndarray:
    """Full-ADE class index of every pixel of a ``_seg.png``: (R // 10) * 256 + G."""
    try:
        with Image.open(path) as seg:
            rgb = np.asarray(seg.convert("RGB"))
    except FileNotFoundError as err:
        raise SegDiffInputError(f"annotation not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SegDiffInputError(f"cannot read annotation {path}: {err}") from err
    return (rgb[..., 0] // 10).astype(np.uint16) * 256 + rgb[..., 1]


CONVERTER = Converter(
    dataset="ade20k-full", layout=LAYOUT, benchmarks=("ade847",), find_jobs=find_jobs
)
