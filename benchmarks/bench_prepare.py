"""Throughput of `segdiff prepare` on a synthetic PASCAL VOC 2012 folder.

Builds N images (default 1,000 at 512x512: JPEG photos, palette PNG labels with a 255 void
band along object borders) in a temporary folder, prepares the val split with W worker
processes (default 2) and prints images/s. Run: ``python benchmarks/bench_prepare.py``.
"""

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.console import Console

from segdiff.data.converters import voc
from segdiff.data.writer import PreparedWriter
from segdiff.vocabularies import get_vocabulary


def build_voc(root: Path, count: int, size: int) -> None:
    """VOCdevkit/VOC2012 with ``count`` val images of a few labelled ellipses each."""
    devkit = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (devkit / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"2012_{i:06d}" for i in range(count)]
    for i in ids:
        labels = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(1, 5)):
            center = tuple(int(v) for v in rng.integers(0, size, 2))
            axes = tuple(int(v) for v in rng.integers(size // 10, size // 3, 2))
            cv2.ellipse(labels, center, axes, 0, 0, 360, int(rng.integers(1, 21)), -1)
        edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
        labels[edges] = 255
        photo = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (9, 9), 0)
        Image.fromarray(photo).save(devkit / "JPEGImages" / f"{i}.jpg", quality=90)
        mask = Image.fromarray(labels, mode="L").convert("P")
        mask.save(devkit / "SegmentationClass" / f"{i}.png")
    (devkit / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    (devkit / "ImageSets" / "Segmentation" / "train.txt").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "voc", Path(tmp) / "out"
        start = time.perf_counter()
        build_voc(root, args.images, args.size)
        print(f"built {args.images} images in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        jobs = voc.find_jobs(root, "val", "voc21")
        writer = PreparedWriter(out, "voc", "voc21", get_vocabulary("voc21").classes)
        summary = writer.write_split("val", jobs, args.workers, Console(stderr=True))
        seconds = time.perf_counter() - start
    assert summary.written == args.images and not summary.failures
    print(
        f"prepared {args.images} images of {args.size}x{args.size} with {args.workers} workers "
        f"in {seconds:.1f} s: {args.images / seconds:.0f} images/s"
    )


if __name__ == "__main__":
    main()
