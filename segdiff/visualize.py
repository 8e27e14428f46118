"""Pictures for people: class colors, labeled overlays with a legend, uncertainty maps."""

import colorsys

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segdiff.depth_coding import NONE_LABEL

NONE_COLOR = (0, 0, 0)
_GOLDEN = 0.618033988749895
MIN_REGION_FRACTION = 0.004  # regions smaller than this get no name written on them


def class_colors(num_classes: int) -> np.ndarray:
    """Deterministic RGB colors (uint8 ``[N, 3]``): hues step by the golden ratio and four
    saturation/brightness pairs alternate, so neighbouring ids differ and class k keeps its
    color whatever N is."""
    colors = [
        colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.85 - 0.3 * (k % 2), 0.95 - 0.25 * (k // 2 % 2))
        for k in range(num_classes)
    ]
    return np.round(np.array(colors).reshape(-1, 3) * 255).astype(np.uint8)


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label map to RGB; any value outside 0..K-1 (none, ignore) is NONE_COLOR."""
    palette = np.vstack([class_colors(num_classes), np.array([NONE_COLOR], dtype=np.uint8)])
    return palette[np.minimum(labels.astype(np.int64), num_classes)]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def overlay(
    image: Image.Image, labels: np.ndarray, classes: list[str], alpha: float = 0.5
) -> Image.Image:
    """Image blended with class colors, each sizeable region named, and a legend on the right
    listing every class present with its pixel share."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colors = colorize(labels, len(classes)).astype(np.float32)
    labeled = (labels != NONE_LABEL)[..., None]
    blended = np.where(labeled, rgb * (1 - alpha) + colors * alpha, rgb).astype(np.uint8)
    canvas = Image.fromarray(blended)
    height, width = labels.shape
    font = _font(max(10, min(height, width) // 24))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(classes):
        for x, y in _region_anchors(labels == k):
            draw.text(
                (x, y),
                name,
                fill="white",
                font=font,
                anchor="mm",
                stroke_width=2,
                stroke_fill="black",
            )
    return _with_legend(canvas, labels, classes)


def _region_anchors(region: np.ndarray) -> list[tuple[int, int]]:
    """One point per connected component large enough to name: its most interior pixel."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 4)
    anchors = []
    for index in range(1, count):
        if stats[index, cv2.CC_STAT_AREA] < MIN_REGION_FRACTION * region.size:
            continue
        component = (components == index).astype(np.uint8)
        distance = cv2.distanceTransform(np.pad(component, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        y, x = np.unravel_index(int(distance.argmax()), distance.shape)
        anchors.append((int(x), int(y)))
    return anchors


def _with_legend(canvas: Image.Image, labels: np.ndarray, classes: list[str]) -> Image.Image:
    counts = np.bincount(labels.ravel(), minlength=NONE_LABEL + 1)
    rows = [(k, name, counts[k] / labels.size) for k, name in enumerate(classes) if counts[k]]
    if counts[NONE_LABEL]:
        rows.append((NONE_LABEL, "(none)", counts[NONE_LABEL] / labels.size))
    font = _font(12)
    line = 16
    text_width = max((font.getlength(f"{name} {share:.1%}") for _, name, share in rows), default=0)
    legend_width = int(text_width) + 30
    height = max(canvas.height, line * len(rows) + 8)
    result = Image.new("RGB", (canvas.width + legend_width, height), "white")
    result.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(result)
    palette = class_colors(len(classes))
    for row, (k, name, share) in enumerate(rows):
        top = 4 + row * line
        color = NONE_COLOR if k == NONE_LABEL else tuple(int(c) for c in palette[k])
        draw.rectangle((canvas.width + 4, top, canvas.width + 16, top + 12), fill=color)
        draw.text((canvas.width + 22, top), f"{name} {share:.1%}", fill="black", font=font)
    return result


def uncertainty_image(uncertainty: np.ndarray) -> Image.Image:
    """8-bit grayscale: 0 = all ensemble members agree, 255 = no agreement at all."""
    return Image.fromarray(np.round(np.clip(uncertainty, 0, 1) * 255).astype(np.uint8), "L")
