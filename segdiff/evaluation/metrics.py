"""Semantic-segmentation metrics as detectron2's SemSegEvaluator computes them
(docs/benchmarks.md).

One confusion matrix for a whole split, indexed ``[prediction, ground truth]``: N class rows
plus a last row for "none" predictions, and N ground-truth columns. Ground-truth ignore pixels
never enter it. A "none" prediction on a labeled pixel is a miss for that pixel's class: it
counts in the class's ground-truth total and in no class's prediction total.

IoU = TP / (GT + Pred - TP); mIoU, mean accuracy and fwIoU use only the classes with ground
truth in the split, as detectron2 does. Every figure is a percentage.
"""

from dataclasses import dataclass

import numpy as np

from segdiff.depth_coding import IGNORE, none_label


def prediction_rows(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, int]:
    """Predicted class ids -> confusion-matrix rows (0..N-1, N = none), and how many pixels
    held a value that is neither a class id nor the none marker.

    The none marker is the label map's ``none_label`` (255 in 8-bit maps, 65535 in wider
    ones). Out-of-range values are scored as none (a miss), so a broken prediction can never
    raise a score.
    """
    none_value = none_label(labels.dtype)
    labels = labels.astype(np.int64)
    is_class = (labels >= 0) & (labels < num_classes) & (labels != none_value)
    out_of_range = int(np.count_nonzero(~is_class & (labels != none_value)))
    return np.where(is_class, labels, num_classes), out_of_range


def confusion_matrix(rows: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[N + 1, N]`` for one image: rows from prediction_rows, gt ids or IGNORE."""
    if rows.shape != gt.shape:
        raise ValueError(f"prediction {rows.shape} and ground truth {gt.shape} differ in size")
    scored = gt != IGNORE
    gt_ids = gt[scored].astype(np.int64)
    if gt_ids.size and gt_ids.max() >= num_classes:
        raise ValueError(f"ground truth holds id {gt_ids.max()} for {num_classes} classes")
    flat = rows[scored].astype(np.int64) * num_classes + gt_ids
    counts = np.bincount(flat, minlength=(num_classes + 1) * num_classes)
    return counts.reshape(num_classes + 1, num_classes)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Split-level metrics (percent); per-class arrays hold NaN for classes without gt."""

    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    fwiou: float
    iou: np.ndarray
    accuracy: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray


def compute_metrics(confusion: np.ndarray) -> SegmentationMetrics:
    """Metrics of a ``[N + 1, N]`` confusion matrix that has at least one labeled pixel."""
    num_classes = confusion.shape[1]
    if confusion.shape != (num_classes + 1, num_classes):
        raise ValueError(f"confusion matrix must be [N + 1, N], got {confusion.shape}")
    confusion = confusion.astype(np.float64)
    tp = np.diagonal(confusion).copy()
    gt_pixels = confusion.sum(axis=0)
    pred_pixels = confusion[:num_classes].sum(axis=1)
    total = gt_pixels.sum()
    if total == 0:
        raise ValueError("no labeled ground-truth pixel: nothing to score")

    present = gt_pixels > 0
    accuracy = np.full(num_classes, np.nan)
    accuracy[present] = tp[present] / gt_pixels[present]
    iou = np.full(num_classes, np.nan)
    union = gt_pixels + pred_pixels - tp
    iou[present] = tp[present] / union[present]
    weights = gt_pixels / total
    return SegmentationMetrics(
        miou=100 * float(iou[present].mean()),
        pixel_accuracy=100 * float(tp.sum() / total),
        mean_accuracy=100 * float(accuracy[present].mean()),
        fwiou=100 * float((iou[present] * weights[present]).sum()),
        iou=100 * iou,
        accuracy=100 * accuracy,
        gt_pixels=gt_pixels.astype(np.int64),
        pred_pixels=pred_pixels.astype(np.int64),
    )
