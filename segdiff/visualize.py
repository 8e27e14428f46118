"""Pictures for people: class colors, labeled overlays with a legend, uncertainty maps.

Text is sized to the picture (a 96 px example and a 6000 x 4000 photo both read well), and
pictures of small images are enlarged by a whole factor first, so that names stay legible.
Region names go inside their regions, never over each other or over the border; a region
too small for its name at the smallest legible size is named in the legend only.
"""

import colorsys
import math

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segdiff.depth_coding import NONE_LABEL

NONE_COLOR = (0, 0, 0)
_GOLDEN = 0.618033988749895
MIN_REGION_FRACTION = 0.004  # regions smaller than this get no name written on them
MIN_SHORT_SIDE = 384
"""Pictures of images with a shorter short side are enlarged by a whole factor to reach it."""
TEXT_FRACTION = 1 / 24
"""Text height relative to the picture's short side (legend, region names at most)."""
MIN_TEXT = 12
MIN_NAME_TEXT = 10
"""Smallest size a region name is shrunk to (and never below half the picture's text size)
before it is left to the legend."""
PLACEMENT_SIDE = 768
"""Names are placed on the label map shrunk to this long side (placing is then fast)."""


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


def display_scale(height: int, width: int) -> int:
    """The whole factor a picture of a height x width image is enlarged by (1 for most)."""
    return max(1, math.ceil(MIN_SHORT_SIDE / max(1, min(height, width))))


def text_size(height: int, width: int) -> int:
    """Text height in pixels for a picture of this size."""
    return max(MIN_TEXT, round(min(height, width) * TEXT_FRACTION))


def _enlarged(image: Image.Image, maps: list[np.ndarray]) -> tuple[Image.Image, list[np.ndarray]]:
    """The image and per-pixel maps enlarged by `display_scale`, pixel for pixel."""
    scale = display_scale(*maps[0].shape)
    if scale == 1:
        return image.convert("RGB"), maps
    size = (maps[0].shape[1] * scale, maps[0].shape[0] * scale)
    enlarged = [np.repeat(np.repeat(m, scale, axis=0), scale, axis=1) for m in maps]
    return image.convert("RGB").resize(size, Image.Resampling.NEAREST), enlarged


def overlay(
    image: Image.Image, labels: np.ndarray, classes: list[str], alpha: float = 0.5
) -> Image.Image:
    """Image blended with class colors, each sizeable region named inside it, and a legend on
    the right listing every class present with its pixel share."""
    image, (labels,) = _enlarged(image, [labels])
    rgb = np.asarray(image, dtype=np.float32)
    colors = colorize(labels, len(classes)).astype(np.float32)
    labeled = (labels != NONE_LABEL)[..., None]
    blended = np.where(labeled, rgb * (1 - alpha) + colors * alpha, rgb).astype(np.uint8)
    canvas = Image.fromarray(blended)
    size = text_size(*labels.shape)
    draw = ImageDraw.Draw(canvas)
    for (x, y), name, name_size in place_names(labels, classes, size):
        draw.text(
            (x, y),
            name,
            fill="white",
            font=_font(name_size),
            anchor="mm",
            stroke_width=_stroke(name_size),
            stroke_fill="black",
        )
    return _with_legend(canvas, labels, classes, size)


def _stroke(size: int) -> int:
    return max(1, size // 8)


def place_names(
    labels: np.ndarray, classes: list[str], size: int
) -> list[tuple[tuple[int, int], str, int]]:
    """((x, y) center, name, text size) of each region name to draw.

    A name goes where its whole box (outline included) lies inside its region, as deep inside
    as possible, so names never cross each other or the border; it shrinks (down to
    MIN_NAME_TEXT) before it gives up.
    """
    step = max(1, math.ceil(max(labels.shape) / PLACEMENT_SIDE))
    grid = labels[step // 2 :: step, step // 2 :: step]
    regions = []
    for k in np.unique(grid):
        if k >= len(classes):
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(
            (grid == k).astype(np.uint8), connectivity=4
        )
        for index in range(1, count):
            area = stats[index, cv2.CC_STAT_AREA]
            if area >= MIN_REGION_FRACTION * grid.size:
                regions.append((area, int(k), components == index))
    placed = []
    for _, k, region in sorted(regions, key=lambda region: -region[0]):
        spot = _name_spot(region, classes[k], size, step)
        if spot is not None:
            (x, y), name_size = spot
            placed.append(((x * step + step // 2, y * step + step // 2), classes[k], name_size))
    return placed


def _name_spot(region: np.ndarray, name: str, size: int, step: int):
    """Where in ``region`` (a grid of ``step`` px cells) the name fits, and at which size;
    None if it fits nowhere. The box keeps one cell clear of the region's edge."""
    depth = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    smallest = max(MIN_NAME_TEXT, size // 2)
    while size >= smallest:
        left, top, right, bottom = _font(size).getbbox(
            name, anchor="mm", stroke_width=_stroke(size)
        )
        cells = (
            math.floor(left / step) - 1,
            math.floor(top / step) - 1,
            math.ceil(right / step) + 1,
            math.ceil(bottom / step) + 1,
        )
        kernel = np.ones((cells[3] - cells[1] + 1, cells[2] - cells[0] + 1), dtype=np.uint8)
        fits = cv2.erode(
            region.astype(np.uint8),
            kernel,
            anchor=(-cells[0], -cells[1]),
            borderType=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        if fits.any():
            y, x = np.unravel_index(int(np.argmax(np.where(fits > 0, depth, -1))), depth.shape)
            return (int(x), int(y)), size
        size = math.floor(size * 0.8)
    return None


def _with_legend(
    canvas: Image.Image, labels: np.ndarray, classes: list[str], size: int
) -> Image.Image:
    """The canvas with a legend panel on its right: a color swatch, name and pixel share per
    class present, in as many columns as the canvas height needs."""
    counts = np.bincount(labels.ravel(), minlength=NONE_LABEL + 1)
    rows = [(k, name, counts[k] / labels.size) for k, name in enumerate(classes) if counts[k]]
    if counts[NONE_LABEL]:
        rows.append((NONE_LABEL, "(none)", counts[NONE_LABEL] / labels.size))
    font = _font(size)
    line, pad = round(size * 1.5), max(4, size // 2)
    texts = [f"{name} {share:.1%}" for _, name, share in rows]
    column = size + pad + math.ceil(max((font.getlength(t) for t in texts), default=0)) + pad
    per_column = max(1, (canvas.height - 2 * pad) // line)
    columns = max(1, math.ceil(len(rows) / per_column))
    height = max(canvas.height, 2 * pad + line * min(len(rows), per_column))
    result = Image.new("RGB", (canvas.width + pad + columns * column, height), "white")
    result.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(result)
    palette = class_colors(len(classes))
    for index, ((k, _, _), text) in enumerate(zip(rows, texts, strict=True)):
        x = canvas.width + pad + (index // per_column) * column
        y = pad + (index % per_column) * line
        color = NONE_COLOR if k == NONE_LABEL else tuple(int(c) for c in palette[k])
        draw.rectangle((x, y, x + size, y + size), fill=color, outline="gray")
        draw.text((x + size + pad, y + size / 2), text, fill="black", font=font, anchor="lm")
    return result


def uncertainty_image(uncertainty: np.ndarray) -> Image.Image:
    """8-bit grayscale: 0 = all ensemble members agree, 255 = no agreement at all."""
    return Image.fromarray(np.round(np.clip(uncertainty, 0, 1) * 255).astype(np.uint8), "L")


def uncertainty_view(image: Image.Image, uncertainty: np.ndarray) -> Image.Image:
    """The uncertainty for people: a heat map (inferno: dark = all members agree, bright
    yellow = most disagree) over the dimmed image, with a color bar on the right."""
    image, (uncertainty,) = _enlarged(image, [uncertainty])
    gray = np.asarray(image.convert("L"), dtype=np.float32)[..., None]
    canvas = Image.fromarray((0.4 * gray + 0.6 * _inferno(uncertainty)).astype(np.uint8))
    return _with_color_bar(canvas, text_size(*uncertainty.shape))


def _inferno(values: np.ndarray) -> np.ndarray:
    """RGB (float32) of values in [0, 1] on the inferno color map."""
    gray = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)[..., ::-1].astype(np.float32)


def _with_color_bar(canvas: Image.Image, size: int) -> Image.Image:
    """The canvas with the uncertainty scale on its right, 0% at the bottom."""
    font = _font(size)
    pad = max(4, size // 2)
    title = "members against the vote"
    title_lines = title.split(" ", 1)
    text_width = math.ceil(max(font.getlength(t) for t in [*title_lines, "100%"]))
    height = max(canvas.height, 8 * size)
    result = Image.new("RGB", (canvas.width + 3 * pad + size + text_width, height), "white")
    result.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(result)
    x = canvas.width + pad
    for number, text in enumerate(title_lines):
        draw.text((x, pad + number * round(size * 1.3)), text, fill="black", font=font)
    top = pad + 3 * size
    bottom = height - pad - size // 2
    ramp = _inferno(np.linspace(1, 0, bottom - top)[:, None])
    bar = Image.fromarray(np.repeat(ramp, size, axis=1).astype(np.uint8))
    result.paste(bar, (x, top))
    for share in (0, 50, 100):
        y = bottom - (bottom - top) * share / 100
        draw.text((x + size + pad, y), f"{share}%", fill="black", font=font, anchor="lm")
    return result
