"""Depth coding: class indices <-> gray levels (DESIGN §2).

A mask is always paired with an ordered class list of K names. Class k is drawn at gray
level ``round(255 * (k + 1) / K)``; gray 0 means "none of the listed classes". Levels are
absolute, so a prediction is decoded by snapping to the nearest level, never by
normalising the image first. Everything else in segdiff calls this module.
"""

import numpy as np
import torch

MAX_CLASSES = 255
NONE_LABEL = 255
"""Label value for "none of the listed classes" in label maps (gray 0 in masks)."""


def check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"a class list holds 1 to {MAX_CLASSES} classes, got {num_classes}")


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
        raise ValueError(f"labels must be in 0..{num_classes - 1} or {NONE_LABEL}")
    lut = np.zeros(256, dtype=np.uint8)
    lut[:num_classes] = levels
    return lut[labels.astype(np.int64) & 0xFF] * valid.astype(np.uint8)


def decode(gray: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray | torch.Tensor:
    """Gray values on the 0..255 scale (any float or int array) to labels.

    Each pixel takes the nearest of {0, g_0, ..., g_{K-1}}; the result is uint8 with class
    index k, or NONE_LABEL where gray 0 is nearest. Works on numpy arrays and torch tensors
    (same type out).
    """
    levels = np.concatenate([[0], gray_levels(num_classes)]).astype(np.float32)
    # Midpoints between consecutive levels split the gray axis into K + 1 bins.
    bounds = (levels[1:] + levels[:-1]) / 2
    if isinstance(gray, torch.Tensor):
        bins = torch.bucketize(gray.float(), torch.from_numpy(bounds).to(gray.device))
        return torch.where(bins == 0, NONE_LABEL, bins - 1).to(torch.uint8)
    bins = np.searchsorted(bounds, np.asarray(gray, dtype=np.float32), side="left")
    return np.where(bins == 0, NONE_LABEL, bins - 1).astype(np.uint8)
