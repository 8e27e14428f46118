"""Synthetic shapes: the dataset segdiff generates itself for CI, tests and the demo model.

Each image shows 1-4 filled shapes (circle, square, triangle, star, ring, cross) on a smooth
random background. Colors, sizes, positions and rotations are random and independent of the
class, so the class can only be learnt from geometry. Shapes span 25-45% of the shorter
image side, keep at least 60% of their area visible when a later shape overlaps them, and
differ clearly in color from the background. Labels use the ``shapes`` vocabulary, where
background (every pixel outside a shape) is class 0.

Everything is seeded: image i of a split is ``generate_sample((seed, split_code, i), size)``.
"""

from collections.abc import Sequence
from functools import partial

import cv2
import numpy as np

from segdiff.data.writer import Converted, Job
from segdiff.vocabularies import SHAPES_CLASSES

SPLIT_CODES = {"train": 0, "val": 1}
DEFAULT_COUNTS = {"train": 2000, "val": 200}
DEFAULT_SIZE = 64
SIZE_FRACTION = (0.25, 0.45)
"""Shape diameter as a fraction of the shorter image side."""
MIN_VISIBLE = 0.6
MIN_COLOR_DISTANCE = 110.0
"""Least RGB distance between a shape's color and the background colors."""
SUBPIXEL_BITS = 4


def generate_sample(
    seed: int | Sequence[int], size: int | tuple[int, int] = DEFAULT_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """One image (HxWx3 uint8) and its labels (HxW uint8, index into SHAPES_CLASSES).

    ``size`` is the side of a square image, or a (min, max) range from which height and width
    are drawn independently.
    """
    rng = np.random.default_rng(seed)
    low, high = (size, size) if isinstance(size, int) else size
    height, width = (int(side) for side in rng.integers(low, high + 1, size=2))
    image, background_colors = _background(rng, height, width)
    labels = np.zeros((height, width), dtype=np.uint8)
    drawn: list[tuple[np.ndarray, int]] = []  # (mask, area) of each shape placed so far
    for _ in range(int(rng.integers(1, 5))):
        class_index = int(rng.integers(1, len(SHAPES_CLASSES)))
        for _attempt in range(10):
            mask = _shape_mask(rng, SHAPES_CLASSES[class_index], height, width)
            if all(np.count_nonzero(m & ~mask) >= MIN_VISIBLE * area for m, area in drawn):
                break
        else:
            continue
        drawn = [(m & ~mask, area) for m, area in drawn] + [(mask, int(mask.sum()))]
        image[mask] = _shape_color(rng, background_colors)
        labels[mask] = class_index
    noise = rng.normal(0.0, 4.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), labels


def find_jobs(
    split: str, count: int, seed: int, size: int | tuple[int, int] = DEFAULT_SIZE
) -> list[Job]:
    """``count`` jobs that generate the images of ``split`` (ids 000000, 000001, ...)."""
    return [
        Job(f"{i:06d}", partial(convert_sample, (seed, SPLIT_CODES[split], i), size))
        for i in range(count)
    ]


def convert_sample(seed: Sequence[int], size: int | tuple[int, int]) -> Converted:
    image, labels = generate_sample(seed, size)
    return Converted(labels=labels.astype(np.uint16), image=image)


def _background(rng: np.random.Generator, height: int, width: int):
    """A linear gradient between two colors plus smooth color noise; float image, its colors."""
    colors = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    image = colors[0] * (1 - t[..., None]) + colors[1] * t[..., None]
    coarse = rng.normal(0.0, 18.0, size=(4, 4, 3)).astype(np.float32)
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return image, colors


def _shape_color(rng: np.random.Generator, background_colors: np.ndarray) -> np.ndarray:
    """A random color far from both background colors (the farthest of a few draws)."""
    candidates = rng.uniform(0, 255, size=(16, 3))
    distances = np.linalg.norm(candidates[:, None] - background_colors[None], axis=2).min(axis=1)
    good = np.flatnonzero(distances >= MIN_COLOR_DISTANCE)
    return candidates[good[0] if good.size else int(np.argmax(distances))]


def _shape_mask(rng: np.random.Generator, shape: str, height: int, width: int) -> np.ndarray:
    """Boolean mask of one randomly placed, sized and rotated shape, fully inside the image."""
    radius = rng.uniform(*SIZE_FRACTION) * min(height, width) / 2
    center = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
    angle = rng.uniform(0, 2 * np.pi)
    canvas = np.zeros((height, width), dtype=np.uint8)
    scale = 1 << SUBPIXEL_BITS
    fixed_center = tuple(int(v) for v in np.round(center * scale))
    if shape in ("circle", "ring"):
        cv2.circle(canvas, fixed_center, round(radius * scale), 1, -1, cv2.LINE_8, SUBPIXEL_BITS)
        if shape == "ring":
            inner = round(0.55 * radius * scale)
            cv2.circle(canvas, fixed_center, inner, 0, -1, cv2.LINE_8, SUBPIXEL_BITS)
        return canvas.astype(bool)
    points = _polygon(shape, angle) * radius + center
    fixed = np.round(points * scale).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 1, cv2.LINE_8, SUBPIXEL_BITS)
    return canvas.astype(bool)


def _polygon(shape: str, angle: float) -> np.ndarray:
    """Vertices (x, y) of a polygon shape with circumradius 1 around the origin, rotated."""
    if shape == "square":
        theta = np.pi / 4 + np.arange(4) * np.pi / 2
        points = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    elif shape == "triangle":
        theta = np.arange(3) * 2 * np.pi / 3
        points = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    elif shape == "star":
        theta = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        points = np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)
    else:  # cross: a plus sign with arms a third of the radius wide
        w = 1 / 3
        points = np.array(
            [
                (w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
                (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1),
            ]
        )  # fmt: skip
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rotation.T
