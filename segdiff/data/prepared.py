"""The prepared dataset format (docs/prepared-format.md): the contract between prepare, train
and eval.

```
OUT/meta.json                 format_version, dataset, benchmark, vocabulary, splits
OUT/<split>/images/<id>.<ext> the image
OUT/<split>/masks/<id>.png    depth-coded mask for the image's own class list
OUT/<split>/text.json         {"<id>.<ext>": [class names present, vocabulary order]}
OUT/<split>/img_list.txt      absolute image paths
OUT/<split>/gt_list.txt       absolute mask paths, same order
```
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segdiff import depth_coding
from segdiff.errors import SegDiffInputError
from segdiff.imageio import IMAGE_READ_ERRORS, image_read_error, read_json_object

FORMAT_VERSION = 1
_PREPARE_AGAIN = "prepare the dataset again with 'segdiff prepare'"


@dataclass(frozen=True)
class PreparedSplit:
    """One split of a prepared dataset, read-only."""

    root: Path
    split: str
    dataset: str
    benchmark: str
    vocabulary: tuple[str, ...]
    text: dict[str, tuple[str, ...]]

    @property
    def image_names(self) -> list[str]:
        """Image file names (``<id>.<ext>``), sorted."""
        return sorted(self.text)

    def image_path(self, image_name: str) -> Path:
        return self.root / self.split / "images" / image_name

    def mask_path(self, image_name: str) -> Path:
        return self.root / self.split / "masks" / (Path(image_name).stem + ".png")

    def classes(self, image_name: str) -> tuple[str, ...]:
        return self.text[image_name]

    def load_mask(self, image_name: str) -> np.ndarray:
        path = self.mask_path(image_name)
        try:
            with Image.open(path) as mask:
                return np.asarray(mask.convert("L") if mask.mode != "L" else mask).copy()
        except (FileNotFoundError, *IMAGE_READ_ERRORS) as err:
            raise image_read_error(path, err, "prepared mask") from err

    def local_labels(self, image_name: str) -> np.ndarray:
        """The mask decoded with the image's own class list: uint8 indices into
        ``classes(image_name)``, NONE_LABEL where gray 0. SegDiffInputError for a mask whose
        gray values are not the levels of that list (`depth_coding.decode_mask`)."""
        return depth_coding.decode_mask(
            self.load_mask(image_name),
            len(self.classes(image_name)),
            str(self.mask_path(image_name)),
        )

    def benchmark_labels(self, image_name: str) -> np.ndarray:
        """Ground truth as vocabulary indices (uint16, depth_coding.IGNORE where gray 0) from
        mask + list."""
        names = self.classes(image_name)
        index = {name: i for i, name in enumerate(self.vocabulary)}
        return depth_coding.recode(
            self.local_labels(image_name),
            {k: index[name] for k, name in enumerate(names)},
            len(self.vocabulary),
            dtype=np.uint16,
        )


def open_prepared(root: str | Path, split: str) -> PreparedSplit:
    """Open ``root/<split>``; raise SegDiffInputError naming what is missing or wrong."""
    root = Path(root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise SegDiffInputError(
            f"{root} is not a prepared segdiff dataset: {meta_path} is missing. "
            "Create one with 'segdiff prepare DATASET ROOT --output DIR'."
        )
    meta = read_json_object(meta_path, _PREPARE_AGAIN)
    if meta.get("format_version") != FORMAT_VERSION:
        raise SegDiffInputError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; "
            f"this segdiff reads version {FORMAT_VERSION}"
        )
    vocabulary = meta.get("vocabulary")
    if (
        not isinstance(vocabulary, list)
        or not vocabulary
        or not all(isinstance(name, str) and name for name in vocabulary)
        or len(set(vocabulary)) != len(vocabulary)
    ):
        raise SegDiffInputError(
            f"{meta_path} needs a 'vocabulary': a list of distinct class names, got "
            f"{_preview(vocabulary)}"
        )
    text_path = root / split / "text.json"
    if not text_path.is_file():
        splits = meta.get("splits")
        known = ", ".join(sorted(splits)) if isinstance(splits, dict) else "?"
        raise SegDiffInputError(
            f"split {split!r} is missing in {root} ({text_path}); prepared splits: {known}"
        )
    text = read_json_object(text_path, _PREPARE_AGAIN)
    known = set(vocabulary)
    for name, classes in text.items():
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise SegDiffInputError(
                f"{text_path}: {name} must map to a list of class names, got {_preview(classes)}"
            )
        unknown = [c for c in classes if c not in known]
        if unknown:
            raise SegDiffInputError(
                f"{text_path}: {name} lists classes not in the vocabulary: {unknown}"
            )
    return PreparedSplit(
        root=root,
        split=split,
        dataset=str(meta.get("dataset", "")),
        benchmark=str(meta.get("benchmark", "")),
        vocabulary=tuple(vocabulary),
        text={name: tuple(classes) for name, classes in text.items()},
    )


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
