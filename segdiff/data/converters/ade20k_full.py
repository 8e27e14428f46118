"""Full ADE20K release (ADE20K_2021_17_01) -> ADE-847, or every object name ("raw").

Each image ``<id>.jpg`` has ``<id>_seg.png`` beside it, whose pixel class is the full-ADE
index ``(R // 10) * 256 + G`` (0 = unlabeled), and ``<id>.json`` naming its objects.

- ``ade847``: the 847 benchmark indices map to their train ids; every other index is ignored.
  As in the preparation behind the published numbers (MaskFormer's, copied by CAT-Seg and
  others), an image whose shorter side exceeds 512 is resized so that it is 512 (the other
  side rounded), the image bilinearly and the labels by nearest neighbour; smaller images
  are kept as they are.
- ``raw`` (open-vocabulary training): the vocabulary is every whole-object class name found
  in the JSON files of both splits (field ``name`` of objects with ``part_level`` 0), ordered
  by class index; indices that share a name share a class. The scan reads every JSON once
  per run. Images keep their source resolution.
"""

import json
from functools import cache, partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.progress import track

from segdiff.console import console
from segdiff.data.converters.common import (
    Converter,
    find_dataset_dir,
    layout_error,
    lookup_table,
)
from segdiff.data.writer import Converted, Job
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.imageio import IMAGE_READ_ERRORS, image_read_error
from segdiff.vocabularies import get_vocabulary

LAYOUT = (
    "ADE20K_2021_17_01/images/ADE/{training,validation}/<scene group>/<scene>/ with <id>.jpg, "
    "<id>_seg.png and <id>.json side by side (ROOT may be ADE20K_2021_17_01 or its parent)"
)
SPLIT_FOLDERS = {"train": "training", "val": "validation"}
RAW = "raw"
SHORTER_SIDE = 512
"""ADE-847's protocol: the shorter side of larger images is resized to this."""


def find_jobs(root: Path, split: str, benchmark: str) -> list[Job]:
    ade = _dataset_dir(root)
    images = ade / "images" / "ADE" / SPLIT_FOLDERS[split]
    if not images.is_dir():
        raise layout_error("ade20k-full", root, LAYOUT, f"the split folder {images} is missing")
    unnamed: frozenset[Path] = frozenset()
    if benchmark == RAW:
        _, lookup, unnamed = raw_vocabulary(ade)
    else:
        lookup = lookup_table(benchmark)
    jobs = []
    for path in sorted(images.rglob("*.jpg"), key=lambda p: p.name):
        if path.with_suffix(".json") in unnamed:
            read = partial(_no_names, path.with_suffix(".json"))
        else:  # one lookup array shared by all jobs: a pickled chunk of jobs holds it once
            segmentation = path.with_name(f"{path.stem}_seg.png")
            resize = benchmark != RAW
            read = partial(read_sample, path, segmentation, lookup, resize)
        jobs.append(Job(path.stem, read))
    return jobs


def options(benchmark: str) -> dict[str, int] | None:
    """What meta.json records of the preparation: the resize of the benchmark's protocol."""
    return None if benchmark == RAW else {"shorter_side": SHORTER_SIDE}


def vocabulary(root: Path, benchmark: str) -> tuple[str, ...]:
    """The class names of ``benchmark``; for raw, those found in the dataset at ``root``."""
    if benchmark == RAW:
        return raw_vocabulary(_dataset_dir(root))[0]
    return get_vocabulary(benchmark).classes


def read_sample(
    image: Path, annotation: Path, lookup: np.ndarray, resize: bool = False
) -> Converted:
    """``lookup``: full-ADE class index -> vocabulary id; its last entry catches the rest.
    ``resize``: to the protocol's size (`protocol_size`), when it differs."""
    class_map = read_class_map(annotation)
    size = protocol_size(*class_map.shape) if resize else None
    pixels: Path | np.ndarray = image
    if size is not None:
        pixels = _read_pixels(image)
        if pixels.shape[:2] != class_map.shape:
            raise SegDiffInputError(
                f"annotation {annotation} is {class_map.shape[1]}x{class_map.shape[0]}, its "
                f"image {image} {pixels.shape[1]}x{pixels.shape[0]}"
            )
        height, width = size
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
        class_map = cv2.resize(class_map, (width, height), interpolation=cv2.INTER_NEAREST)
    return Converted(labels=lookup[np.minimum(class_map, len(lookup) - 1)], image=pixels)


def protocol_size(height: int, width: int) -> tuple[int, int] | None:
    """(height, width) ADE-847's protocol resizes an image to: the shorter side to
    SHORTER_SIDE, the longer one in proportion, rounded; None when it stays as it is."""
    if width >= height > SHORTER_SIDE:
        return SHORTER_SIDE, round(width / height * SHORTER_SIDE)
    if height >= width > SHORTER_SIDE:
        return round(height / width * SHORTER_SIDE), SHORTER_SIDE
    return None


def _read_pixels(path: Path) -> np.ndarray:
    """The stored RGB pixels of an image (no EXIF rotation: annotations follow the pixels)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as err:
        raise SegDiffInputError(f"image not found: {path}") from err
    except IMAGE_READ_ERRORS as err:
        raise image_read_error(path, err) from err


def read_class_map(path: Path) -> np.ndarray:
    """Full-ADE class index of every pixel of a ``_seg.png``: (R // 10) * 256 + G."""
    try:
        with Image.open(path) as seg:
            rgb = np.asarray(seg.convert("RGB"))
    except FileNotFoundError as err:
        raise SegDiffInputError(f"annotation not found: {path}") from err
    except IMAGE_READ_ERRORS as err:
        raise image_read_error(path, err, "annotation") from err
    return (rgb[..., 0] // 10).astype(np.uint16) * 256 + rgb[..., 1]


@cache
def raw_vocabulary(ade: Path) -> tuple[tuple[str, ...], np.ndarray, frozenset[Path]]:
    """Over the JSON files of both splits: the class names, a lookup from full-ADE class
    index to name id, and the JSON files that could not be read (their images are skipped).
    """
    paths = sorted((ade / "images" / "ADE").rglob("*.json"), key=lambda p: p.name)
    names_by_index: dict[int, str] = {}
    unreadable = set()
    for path in track(paths, description="reading object names", console=console):
        objects = _whole_objects(path)
        if objects is None:
            unreadable.add(path)
        for index, name in objects or []:
            names_by_index.setdefault(index, name)
    if not names_by_index:
        raise layout_error("ade20k-full", ade, LAYOUT, f"no object names in JSON files under {ade}")
    names = tuple(dict.fromkeys(names_by_index[i] for i in sorted(names_by_index)))
    ids = {name: k for k, name in enumerate(names)}
    lookup = np.full(max(names_by_index) + 2, IGNORE, dtype=np.uint16)
    for index, name in names_by_index.items():
        lookup[index] = ids[name]
    return names, lookup, frozenset(unreadable)


def _whole_objects(path: Path) -> list[tuple[int, str]] | None:
    """(class index, name) of the whole objects in one image's JSON; None if unreadable."""
    try:
        objects = json.loads(path.read_bytes())["annotation"]["object"]
        return [
            (int(obj["name_ndx"]), obj["name"].strip())
            for obj in objects
            if obj["parts"]["part_level"] == 0 and obj["name"].strip()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _no_names(json_path: Path) -> Converted:
    raise SegDiffInputError(f"cannot read the object names of {json_path}")


def _dataset_dir(root: Path) -> Path:
    ade = find_dataset_dir(root, ("", "ADE20K_2021_17_01"), ("images/ADE",))
    if ade is None:
        raise layout_error("ade20k-full", root, LAYOUT)
    return ade


CONVERTER = Converter(
    dataset="ade20k-full",
    layout=LAYOUT,
    benchmarks=("ade847", RAW),
    find_jobs=find_jobs,
    vocabulary=vocabulary,
    options=options,
)
