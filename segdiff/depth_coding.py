"""Depth coding and label values: the one owner of how classes are stored (docs/depth-coding.md).

A mask is always paired with an ordered class list of K names. Class k is drawn at gray
level ``round(255 * (k + 1) / K)``; gray 0 means "none of the listed classes". Levels are
absolute, so a prediction is decoded by snapping to the nearest level, never by
normalising the image first.

Label maps hold class indices. A map of up to 255 classes is uint8 with NONE_LABEL (255)
for "none"; a larger one is uint16 with WIDE_NONE_LABEL (65535). Ground truth in vocabulary
ids is always uint16, with IGNORE (65535) for pixels that are not scored. Everything else in
segdiff calls this module rather than writing these values itself.
"""

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from segdiff.errors import SegDiffInputError

if TYPE_CHECKING:
    import torch

MAX_CLASSES = 255
"""Classes one mask (and one uint8 label map) can hold."""
NONE_LABEL = 255
"""Label value for "none of the listed classes" in uint8 label maps (gray 0 in masks)."""
WIDE_NONE_LABEL = 65535
"""The same in uint16 label maps, for class lists longer than MAX_CLASSES."""
IGNORE = 65535
"""Vocabulary id of pixels that are not scored, in uint16 ground-truth maps."""


def check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise SegDiffInputError(f"a class list holds 1 to {MAX_CLASSES} classes, got {num_classes}")


def label_dtype(num_classes: int) -> np.dtype:
    """The dtype of a label map over ``num_classes`` classes: uint8 up to 255, else uint16."""
    return np.dtype(np.uint8 if num_classes <= MAX_CLASSES else np.uint16)


def none_label(dtype: np.dtype | type) -> int:
    """The "none" value of a label map of this dtype (uint8: 255, wider: 65535)."""
    return NONE_LABEL if np.dtype(dtype) == np.uint8 else WIDE_NONE_LABEL


def recode(
    labels: np.ndarray,
    new_index: Mapping[int, int],
    num_classes: int,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Re-code a label map for another class list: label k becomes ``new_index[k]``.

    Labels missing from ``new_index`` and "none" pixels become the new map's "none". The
    result has ``label_dtype(num_classes)`` unless ``dtype`` says otherwise (its "none" is
    then ``none_label(dtype)``). ``labels`` are uint8 or uint16, "none" being their
    ``none_label``.
    """
    dtype = np.dtype(dtype or label_dtype(num_classes))
    labels = np.asarray(labels)
    lut = np.full(none_label(labels.dtype) + 1, none_label(dtype), dtype=dtype)
    for old, new in new_index.items():
        lut[old] = new
    return lut[labels]


def gray_levels(num_classes: int) -> np.ndarray:
    """The K gray levels, ``levels[k]`` for class k (uint8, strictly increasing)."""
    check_num_classes(num_classes)
    k = np.arange(1, num_classes + 1, dtype=np.float64)
    return np.round(255.0 * k / num_classes).astype(np.uint8)


def encode(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label map (0..K-1, NONE_LABEL for none) to a uint8 gray mask (0 for none)."""
    levels = gray_levels(num_classes)
    labels = np.asarray(labels)
    valid = labels != NONE_LABEL
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() >= num_classes):
        raise SegDiffInputError(f"labels must be in 0..{num_classes - 1} or {NONE_LABEL}")
    lut = np.zeros(NONE_LABEL + 1, dtype=np.uint8)
    lut[:num_classes] = levels
    return lut[labels.astype(np.int64) & 0xFF] * valid.astype(np.uint8)


def decode(gray: "np.ndarray | torch.Tensor", num_classes: int) -> "np.ndarray | torch.Tensor":
    """Gray values on the 0..255 scale (any float or int array) to labels.

    Each pixel takes the nearest of {0, g_0, ..., g_{K-1}}; the result is uint8 with class
    index k, or NONE_LABEL where gray 0 is nearest. Works on numpy arrays and torch tensors
    (same type out).
    """
    levels = np.concatenate([[0], gray_levels(num_classes)]).astype(np.float32)
    # Midpoints between consecutive levels split the gray axis into K + 1 bins.
    bounds = (levels[1:] + levels[:-1]) / 2
    torch = sys.modules.get("torch")  # not imported yet: gray is no tensor (keeps CLI start fast)
    if torch is not None and isinstance(gray, torch.Tensor):
        bins = torch.bucketize(gray.float(), torch.from_numpy(bounds).to(gray.device))
        return torch.where(bins == 0, NONE_LABEL, bins - 1).to(torch.uint8)
    bins = np.searchsorted(bounds, np.asarray(gray, dtype=np.float32), side="left")
    return np.where(bins == 0, NONE_LABEL, bins - 1).astype(np.uint8)


MAX_OFF_LEVEL_FRACTION = 0.01
"""A stored mask may have at most this share of pixels off its levels (decoded to the
nearest); more means it was coded for another list, shifted or resized with interpolation."""


def decode_mask(mask: np.ndarray, num_classes: int, source: str = "mask") -> np.ndarray:
    """A stored uint8 mask, depth-coded for a list of ``num_classes`` classes (0: an image
    with no listed class, all gray 0), to labels; SegDiffInputError when more than
    MAX_OFF_LEVEL_FRACTION of its pixels are no level of that list. ``source`` names the
    mask in the message."""
    mask = np.asarray(mask, dtype=np.uint8)
    on_level = np.zeros(256, dtype=bool)
    on_level[0] = True
    if num_classes:
        on_level[gray_levels(num_classes)] = True
    off = int(np.count_nonzero(~on_level[mask]))
    if off > MAX_OFF_LEVEL_FRACTION * mask.size:
        levels = ", ".join(str(g) for g in np.flatnonzero(on_level)[:6])
        more = ", ..." if num_classes > 5 else ""
        raise SegDiffInputError(
            f"{source}: {off} of {mask.size} pixels ({100 * off / mask.size:.1f}%) have gray "
            f"values off the levels of its {num_classes}-class list ({levels}{more}); at most "
            f"{100 * MAX_OFF_LEVEL_FRACTION:g}% may be. The mask was coded for another class "
            "list, shifted, or resized with interpolation: prepare the dataset again with "
            "'segdiff prepare'."
        )
    if not num_classes:
        return np.full(mask.shape, NONE_LABEL, dtype=np.uint8)
    return decode(mask, num_classes)
