"""A tiny prepared dataset (DESIGN §5) written by hand from vocabulary-id label maps."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdiff import depth_coding


def write_prepared(
    root: Path, benchmark: str, vocabulary: tuple[str, ...], labels: dict[str, np.ndarray]
) -> Path:
    """``labels``: image id -> vocabulary ids (255 = ignore). Images are random RGB PNGs of
    the label map's size."""
    rng = np.random.default_rng(0)
    split = root / "val"
    (split / "images").mkdir(parents=True)
    (split / "masks").mkdir()
    text = {}
    for image_id, ids in labels.items():
        present = [int(v) for v in np.unique(ids) if v != 255]
        local = np.full(ids.shape, 255, dtype=np.uint8)
        for k, v in enumerate(present):
            local[ids == v] = k
        mask = depth_coding.encode(local, len(present)) if present else np.zeros_like(local)
        pixels = rng.integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(split / "images" / f"{image_id}.png")
        Image.fromarray(mask).save(split / "masks" / f"{image_id}.png")
        text[f"{image_id}.png"] = [vocabulary[v] for v in present]
    (split / "text.json").write_text(json.dumps(text))
    names = sorted(text)
    (split / "img_list.txt").write_text("".join(f"{split / 'images' / n}\n" for n in names))
    gt_paths = (split / "masks" / (Path(n).stem + ".png") for n in names)
    (split / "gt_list.txt").write_text("".join(f"{p}\n" for p in gt_paths))
    meta = {
        "format_version": 1,
        "dataset": benchmark,
        "benchmark": benchmark,
        "vocabulary": list(vocabulary),
        "splits": {"val": len(text)},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def make_prepared(tmp_path):
    def make(benchmark: str, vocabulary: tuple[str, ...], labels: dict[str, np.ndarray]) -> Path:
        return write_prepared(tmp_path / f"prepared-{benchmark}", benchmark, vocabulary, labels)

    return make
