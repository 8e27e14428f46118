"""PASCAL VOC 2012 -> VOC-21 (background is class 0) or VOC-20 (background ignored).

Annotations are palette PNGs read as raw indices: 0 background, 1..20 the classes, 255 the
void band along object borders (ignored in every protocol). The train split is ``train.txt``
plus every image of the SBD augmentation found (``SegmentationClassAug/*.png`` or SBD's
``benchmark_RELEASE/dataset/cls/*.mat``) minus ``val.txt``: the usual 10,582 images with the
full augmentation. An image's official ``SegmentationClass`` mask wins over an augmented one,
and SegmentationClassAug over SBD.
"""

from functools import partial
from pathlib import Path

import numpy as np

from segdiff.data.converters.common import (
    Converter,
    find_dataset_dir,
    layout_error,
    load_mat,
    read_index_png,
    read_lines,
    remap,
)
from segdiff.data.writer import Converted, Job
from segdiff.errors import SegDiffInputError

LAYOUT = (
    "VOCdevkit/VOC2012/ with JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette indices) "
    "and ImageSets/Segmentation/{train,val}.txt; optionally SegmentationClassAug/<id>.png or "
    "SBD's benchmark_RELEASE/dataset/cls/<id>.mat beside VOCdevkit (ROOT may be VOC2012, "
    "VOCdevkit or its parent)"
)


def find_jobs(root: Path, split: str, benchmark: str) -> list[Job]:
    voc = find_dataset_dir(
        root, ("", "VOC2012", "VOCdevkit/VOC2012"), ("JPEGImages", "ImageSets/Segmentation")
    )
    if voc is None:
        raise layout_error("voc", root, LAYOUT)
    official = (voc / "SegmentationClass", ".png")
    augmentations = _augmentations(voc)
    val_ids = _split_ids(voc, root, "val")
    if split == "val":
        ids = set(val_ids)
        # Like CAT-Seg, take SegmentationClassAug's copy when the official mask is absent.
        sources = [official, *(a for a in augmentations if a[1] == ".png")]
    else:
        ids = set(_split_ids(voc, root, "train"))
        for folder, suffix in augmentations:
            ids.update(path.stem for path in folder.glob(f"*{suffix}"))
        ids -= set(val_ids)
        sources = [official, *augmentations]
    return [
        Job(
            i,
            partial(
                read_sample, voc / "JPEGImages" / f"{i}.jpg", _annotation(sources, i), benchmark
            ),
        )
        for i in sorted(ids)
    ]


def _annotation(sources: list[tuple[Path, str]], image_id: str) -> Path:
    """The first label file of ``image_id`` among (folder, suffix) sources; else the first
    candidate, which is then reported missing."""
    candidates = [folder / f"{image_id}{suffix}" for folder, suffix in sources]
    return next((path for path in candidates if path.is_file()), candidates[0])


def read_sample(image: Path, annotation: Path, benchmark: str) -> Converted:
    raw = read_sbd_mat(annotation) if annotation.suffix == ".mat" else read_index_png(annotation)
    return Converted(labels=remap(raw, benchmark), image=image)


def read_sbd_mat(path: Path) -> np.ndarray:
    """The class map of an SBD ``cls/<id>.mat`` file (struct GTcls, field Segmentation)."""
    variables = load_mat(path)
    try:
        return np.asarray(variables["GTcls"][0]["Segmentation"][0])
    except (KeyError, IndexError, ValueError) as err:
        raise SegDiffInputError(f"SBD annotation {path} has no GTcls.Segmentation") from err


def _split_ids(voc: Path, root: Path, split: str) -> list[str]:
    path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise layout_error("voc", root, LAYOUT, f"the split list {path} is missing")
    return read_lines(path)


def _augmentations(voc: Path) -> list[tuple[Path, str]]:
    """SBD label folders present: (folder, file suffix), in order of preference."""
    found = []
    if (voc / "SegmentationClassAug").is_dir():
        found.append((voc / "SegmentationClassAug", ".png"))
    for parent in (voc, voc.parent, voc.parent.parent):
        sbd = parent / "benchmark_RELEASE" / "dataset" / "cls"
        if sbd.is_dir():
            found.append((sbd, ".mat"))
            break
    return found


CONVERTER = Converter(
    dataset="voc", layout=LAYOUT, benchmarks=("voc21", "voc20"), find_jobs=find_jobs
)
