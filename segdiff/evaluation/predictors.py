"""Where predictions come from: a folder of label PNGs, or a model called image by image.

Evaluation asks a *label source* for each prepared image name and gets a label map of
benchmark class ids (255 = none in 8-bit maps, 65535 in 16-bit ones), or None when no
prediction exists for that image. A source raises SegDiffInputError for a file it cannot use.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segdiff.data.prepared import PreparedSplit
from segdiff.depth_coding import NONE_LABEL, WIDE_NONE_LABEL
from segdiff.errors import SegDiffInputError
from segdiff.imageio import load_rgb

LabelSource = Callable[[str], np.ndarray | None]
Predictor = Callable[[Image.Image, Sequence[str]], np.ndarray]
"""``predict(image, classes) -> labels``: class indices at the image's size, 255 = none."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel label PNG: uint8 (8-bit or palette indices) or uint16 (16-bit)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            labels = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SegDiffInputError(f"cannot read prediction {path}: {err}") from err
    if mode in ("L", "P"):
        return labels.astype(np.uint8)
    if mode in _SIXTEEN_BIT_MODES and labels.min() >= 0 and labels.max() <= WIDE_NONE_LABEL:
        return labels.astype(np.uint16)
    raise SegDiffInputError(
        f"prediction {path} is a {mode} image; predictions are single-channel label PNGs "
        f"of class ids (8-bit with {NONE_LABEL} = none, or 16-bit with {WIDE_NONE_LABEL} = none)"
    )


def from_directory(directory: str | Path) -> LabelSource:
    """Predictions stored as ``<directory>/<image stem>.png``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SegDiffInputError(
            f"predictions folder not found: {directory} (expected label PNGs named <id>.png)"
        )

    def labels(image_name: str) -> np.ndarray | None:
        path = directory / (Path(image_name).stem + ".png")
        return read_label_png(path) if path.is_file() else None

    return labels


def from_predictor(
    predict: Predictor, prepared: PreparedSplit, classes: Sequence[str]
) -> LabelSource:
    """Run ``predict`` on each prepared image with the whole benchmark class list."""
    classes = list(classes)

    def labels(image_name: str) -> np.ndarray:
        image = load_rgb(prepared.image_path(image_name), exif_transpose=False)
        return np.asarray(predict(image, classes))

    return labels


def load_model_predictor(
    model: str | None,
    device: str,
    *,
    ensemble_size: int | None = None,
    denoise_steps: int | None = None,
    processing_res: int | None = None,
    half_precision: bool = False,
    seed: int | None = None,
    batch_size: int = 0,
) -> tuple[Predictor, list[str]]:
    """A SegDiffPipeline (``model`` None: the bundled one) as a Predictor, plus the loader's
    notes for the user. Each image gets a fresh generator from ``seed``, so a prediction does
    not depend on which process makes it, or in which order."""
    import torch

    from segdiff.model.loading import load_pipeline

    pipe, notes = load_pipeline(model, device, half_precision=half_precision)

    def predict(image: Image.Image, classes: Sequence[str]) -> np.ndarray:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        output = pipe(
            image,
            list(classes),
            num_inference_steps=denoise_steps,
            ensemble_size=ensemble_size,
            processing_resolution=processing_res,
            batch_size=batch_size,
            generator=generator,
        )
        return output.labels[0]

    return predict, notes
