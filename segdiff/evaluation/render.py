"""Pictures of an evaluation: sample panels and the confusion matrix (colors: visualize).

Only Pillow and numpy: a confusion matrix must render for 7 classes (names and numbers in the
cells) as well as for 847 (one pixel a cell, no text).
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segdiff.visualize import NONE_COLOR, class_colors, colorize

_TILE_HEIGHT = 256
_BLUE = np.array([8, 48, 107], dtype=np.float64)


def sample_panel(
    image: Image.Image, gt: np.ndarray, pred_ids: np.ndarray, classes: tuple[str, ...]
) -> np.ndarray:
    """image | ground truth | prediction, each 256 px high, with a legend of the classes seen.

    ``gt`` and ``pred_ids`` hold class ids; anything >= len(classes) is drawn black.
    """
    colors = class_colors(len(classes))
    width = max(1, round(image.width * _TILE_HEIGHT / image.height))
    size = (width, _TILE_HEIGHT)
    tiles = [
        image.convert("RGB").resize(size, Image.Resampling.BILINEAR),
        Image.fromarray(colorize(gt, len(classes))).resize(size, Image.Resampling.NEAREST),
        Image.fromarray(colorize(pred_ids, len(classes))).resize(size, Image.Resampling.NEAREST),
    ]
    font = ImageFont.load_default(size=12)
    gap, title_h, row_h = 4, 18, 16
    panel_width = 3 * width + 2 * gap

    # Legend: the classes in either map, then the black entry, flowing left to right.
    seen = sorted(set(np.unique(gt).tolist()) | set(np.unique(pred_ids).tolist()))
    entries = [(tuple(int(c) for c in colors[k]), classes[k]) for k in seen if k < len(classes)]
    entries.append((NONE_COLOR, "ignored (ground truth) / none (prediction)"))
    positions, x, y = [], 2, 0
    for _, name in entries:
        entry_width = 14 + int(font.getlength(name)) + 16
        if x > 2 and x + entry_width > panel_width:
            x, y = 2, y + row_h
        positions.append((x, y))
        x += entry_width

    top = title_h + _TILE_HEIGHT + 4
    panel = Image.new("RGB", (panel_width, top + y + row_h + 2), "white")
    draw = ImageDraw.Draw(panel)
    for i, (tile, title) in enumerate(
        zip(tiles, ("image", "ground truth", "prediction"), strict=True)
    ):
        x = i * (width + gap)
        panel.paste(tile, (x, title_h))
        draw.text((x + 2, 2), title, fill="black", font=font)
    for (color, name), (x, y) in zip(entries, positions, strict=True):
        draw.rectangle((x, top + y + 2, x + 10, top + y + 12), fill=color)
        draw.text((x + 14, top + y), name, fill="black", font=font)
    return np.asarray(panel)


def confusion_image(confusion: np.ndarray, classes: tuple[str, ...]) -> Image.Image:
    """The ``[N + 1, N]`` [prediction, gt] matrix drawn with ground truth as rows and
    predictions (plus "none") as columns, each row normalised to sum 1. Rows without ground
    truth stay light gray. Names are written when cells are large enough, and percentages
    inside the cells for small vocabularies."""
    num_classes = len(classes)
    rows = confusion.T.astype(np.float64)
    totals = rows.sum(axis=1, keepdims=True)
    share = np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)
    rgb = 255 - share[..., None] * (255 - _BLUE)
    rgb[totals[:, 0] == 0] = 225
    cell = int(np.clip(720 // num_classes, 1, 36))
    grid = Image.fromarray(rgb.round().astype(np.uint8)).resize(
        ((num_classes + 1) * cell, num_classes * cell), Image.Resampling.NEAREST
    )
    if cell < 12:
        return _with_title(grid)

    font = ImageFont.load_default(size=min(12, cell - 2))
    names = [*classes, "none"]
    margin = int(max(font.getlength(name) for name in names)) + 6
    image = Image.new("RGB", (margin + grid.width, margin + grid.height), "white")
    image.paste(grid, (margin, margin))
    draw = ImageDraw.Draw(image)
    for k, name in enumerate(classes):
        y = margin + k * cell + cell // 2
        draw.text((margin - 3, y), name, fill="black", font=font, anchor="rm")
    header = Image.new("RGB", (margin, grid.width), "white")
    header_draw = ImageDraw.Draw(header)
    for k, name in enumerate(names):
        header_draw.text((3, k * cell + cell // 2), name, fill="black", font=font, anchor="lm")
    image.paste(header.transpose(Image.Transpose.ROTATE_90), (margin, 0))
    if cell >= 28:
        value_font = ImageFont.load_default(size=10)
        for (k, j), value in np.ndenumerate(share):
            if value >= 0.005:
                color = "white" if value > 0.5 else "black"
                center = (margin + j * cell + cell // 2, margin + k * cell + cell // 2)
                draw.text(center, f"{100 * value:.0f}", fill=color, font=value_font, anchor="mm")
    return _with_title(image)


def _with_title(image: Image.Image) -> Image.Image:
    font = ImageFont.load_default(size=12)
    titled = Image.new("RGB", (max(image.width, 420), image.height + 20), "white")
    titled.paste(image, (0, 20))
    ImageDraw.Draw(titled).text(
        (4, 4), "rows: ground truth, columns: prediction (row-normalised)", fill="black", font=font
    )
    return titled
