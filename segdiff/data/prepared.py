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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from segdiff import depth_coding
from segdiff.errors import SegDiffInputError

FORMAT_VERSION = 1


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
        except (FileNotFoundError, OSError) as err:
            raise SegDiffInputError(f"cannot read prepared mask {path}: {err}") from err

    def benchmark_labels(self, image_name: str) -> np.ndarray:
        """Ground truth as vocabulary indices (uint16, depth_coding.IGNORE where gray 0) from
        mask + list."""
        names = self.classes(image_name)
        mask = self.load_mask(image_name)
        if not names:
            return np.full(mask.shape, depth_coding.IGNORE, dtype=np.uint16)
        index = {name: i for i, name in enumerate(self.vocabulary)}
        return depth_coding.recode(
            depth_coding.decode(mask, len(names)),
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
            "Create one with 'segdiff prepare DATASET ROOT --out DIR'."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        text = json.loads((root / split / "text.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        splits = ", ".join(sorted(meta.get("splits", {}))) if "meta" in locals() else "?"
        raise SegDiffInputError(
            f"split {split!r} is missing in {root} ({err.filename}); prepared splits: {splits}"
        ) from err
    except json.JSONDecodeError as err:
        raise SegDiffInputError(f"corrupt JSON in prepared dataset {root}: {err}") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise SegDiffInputError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; "
            f"this segdiff reads version {FORMAT_VERSION}"
        )
    vocabulary = tuple(meta["vocabulary"])
    known = set(vocabulary)
    for name, classes in text.items():
        unknown = [c for c in classes if c not in known]
        if unknown:
            raise SegDiffInputError(
                f"{root / split / 'text.json'}: {name} lists classes not in the vocabulary: "
                f"{unknown}"
            )
    return PreparedSplit(
        root=root,
        split=split,
        dataset=meta.get("dataset", ""),
        benchmark=meta.get("benchmark", ""),
        vocabulary=vocabulary,
        text={name: tuple(classes) for name, classes in text.items()},
    )
