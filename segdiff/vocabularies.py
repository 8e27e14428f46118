"""Benchmark vocabularies: ordered class names, synonyms, and how each class is stored on disk.

Names follow the benchmarks' own spelling (docs/benchmarks.md), stripped of stray
spaces. Choices where the benchmarks disagree:

- ADE-150 uses the short mmseg / CAT-Seg names (``windowpane``, ``chest of drawers``); the
  objectInfo150 WordNet list of each class goes into ``synonyms``.
- ADE-847 keeps the WordNet comma lists as the class string, as the benchmark does
  (``building, edifice``); the individual names are its synonyms.
- PC-59 uses the standard order (sorted by ``labels.txt`` id) with the CAT-Seg / SAN / ODISE
  spelling ``diningtable`` (``table`` is a synonym). PC-459 uses the spaced spelling of
  ``labels.txt`` (``air conditioner``); CAT-Seg's unspaced spelling is a synonym.
- VOC keeps the devkit spelling (``diningtable``, ``tvmonitor``) with ``table`` / ``tv`` as
  synonyms. VOC-21 has ``background`` first; VOC-20 drops it (background is ignored there).

The tables live in ``segdiff/resources/*.tsv``; ``source_ids`` tells the converters which raw
annotation value marks each class.
"""

from dataclasses import dataclass
from functools import cache
from importlib import resources

from segdiff.errors import SegDiffInputError


@dataclass(frozen=True)
class Vocabulary:
    """An ordered benchmark class list (index = train id)."""

    name: str
    classes: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]]


VOCABULARY_NAMES: tuple[str, ...] = (
    "voc20",
    "voc21",
    "pc59",
    "pc459",
    "ade150",
    "ade847",
    "cocostuff171",
    "shapes",
)

VOC21_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_SYNONYMS = {"diningtable": ("table",), "tvmonitor": ("tv",)}
SHAPES_CLASSES = ("background", "circle", "square", "triangle", "star", "ring", "cross")
PC59_TABLE_ID = 397
"""labels.txt calls id 397 ``table``; the PC-59 benchmarks call it ``diningtable``."""


def get_vocabulary(name: str) -> Vocabulary:
    """The vocabulary called ``name`` (one of VOCABULARY_NAMES)."""
    return _vocabulary_and_ids(name)[0]


def source_ids(name: str) -> tuple[int, ...]:
    """For each class of vocabulary ``name``, the value that marks it in the raw annotations.

    VOC: palette index; PASCAL-Context: ``labels.txt`` id (the .mat LabelMap value); ADE-150:
    annotation PNG value; ADE-847: full-ADE class index ``(R // 10) * 256 + G``; COCO-Stuff:
    stuffthingmaps PNG value; shapes: the class index itself.
    """
    return _vocabulary_and_ids(name)[1]


@cache
def _vocabulary_and_ids(name: str) -> tuple[Vocabulary, tuple[int, ...]]:
    if name not in VOCABULARY_NAMES:
        raise SegDiffInputError(
            f"unknown vocabulary {name!r}; known vocabularies: {', '.join(VOCABULARY_NAMES)}"
        )
    rows: list[tuple[int, str, tuple[str, ...]]]  # (source id, class name, synonyms)
    if name == "voc21":
        rows = [(i, c, VOC_SYNONYMS.get(c, ())) for i, c in enumerate(VOC21_CLASSES)]
    elif name == "voc20":
        rows = [(i, c, VOC_SYNONYMS.get(c, ())) for i, c in enumerate(VOC21_CLASSES) if i > 0]
    elif name == "shapes":
        rows = [(i, c, ()) for i, c in enumerate(SHAPES_CLASSES)]
    elif name == "ade150":
        rows = [
            (int(r["raw_value"]), r["name"], _other_names(r["objectinfo150_name"], r["name"]))
            for r in _read_table("ade150.tsv")
        ]
    elif name == "ade847":
        rows = [
            (int(r["ade_index"]), r["name"], _other_names(r["name"], r["name"]))
            for r in _read_table("ade847_categories.tsv")
        ]
    elif name == "pc459":
        rows = [
            (int(r["labels_txt_id"]), spaced, _other_names(r["name_catseg"], spaced))
            for r in _read_table("pc459_labels.tsv")
            for spaced in [r["name_spaced"]]
        ]
    elif name == "pc59":
        rows = [
            (int(r["labels_txt_id"]), r["name_spaced"], ())
            for r in _read_table("pc459_labels.tsv")
            if r["in_pc59"] == "yes"
        ]
        rows = [
            (i, "diningtable", ("table",)) if i == PC59_TABLE_ID else (i, c, s) for i, c, s in rows
        ]
    else:  # cocostuff171
        rows = [(int(r["png_value"]), r["name"], ()) for r in _read_table("cocostuff171.tsv")]
    vocabulary = Vocabulary(
        name=name,
        classes=tuple(c for _, c, _ in rows),
        synonyms={c: s for _, c, s in rows if s},
    )
    return vocabulary, tuple(i for i, _, _ in rows)


def _other_names(name_list: str, name: str) -> tuple[str, ...]:
    """The comma-separated names of ``name_list`` other than ``name`` itself, in order."""
    names = [n.strip() for n in name_list.split(",")]
    return tuple(dict.fromkeys(n for n in names if n and n != name))


def _read_table(filename: str) -> list[dict[str, str]]:
    """A tab-separated resource table (``#`` lines are comments, the first row is the header)."""
    text = (resources.files("segdiff") / "resources" / filename).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    header = lines[0].split("\t")
    rows = [[cell.strip() for cell in line.split("\t")] for line in lines[1:]]
    return [dict(zip(header, row, strict=True)) for row in rows]
