"""Where predictions come from: a folder of label PNGs, or a model called image by image.

Evaluation asks a *label source* for each prepared image name and gets a label map of
benchmark class ids (255 = none in 8-bit maps, 65535 in 16-bit ones), or None when no
prediction exists for that image. A source raises SegDiffInputError for a file it cannot use.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from segdiff.data.prepared import PreparedSplit
from segdiff.depth_coding import NONE_LABEL, WIDE_NONE_LABEL, recode
from segdiff.errors import SegDiffInputError
from segdiff.imageio import IMAGE_READ_ERRORS, image_read_error, load_rgb
from segdiff.vocabularies import Vocabulary

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
    except IMAGE_READ_ERRORS as err:
        raise image_read_error(path, err, "prediction") from err
    if mode in ("L", "P"):
        return labels.astype(np.uint8)
    if mode in _SIXTEEN_BIT_MODES and labels.min() >= 0 and labels.max() <= WIDE_NONE_LABEL:
        return labels.astype(np.uint16)
    raise SegDiffInputError(
        f"prediction {path} is a {mode} image; predictions are single-channel label PNGs "
        f"of class ids (8-bit with {NONE_LABEL} = none, or 16-bit with {WIDE_NONE_LABEL} = none)"
    )


def from_directory(directory: str | Path, vocabulary: Vocabulary) -> LabelSource:
    """Predictions in ``directory``, for each image stem either

    - ``<stem>.png``: class ids of ``vocabulary`` (the benchmark's), or
    - ``<stem>_labels.png`` with ``<stem>.json``, as `segdiff infer` writes them: indices
      into the class list the JSON records, mapped to ``vocabulary`` ids by name (a class
      of the benchmark or one of its synonyms); a class the benchmark lacks is an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SegDiffInputError(
            f"predictions folder not found: {directory} (expected {prediction_names(directory)})"
        )

    def labels(image_name: str) -> np.ndarray | None:
        stem = Path(image_name).stem
        plain, labeled = directory / f"{stem}.png", directory / f"{stem}_labels.png"
        if plain.is_file() and labeled.is_file():
            raise SegDiffInputError(
                f"both {plain.name} and {labeled.name} are in {directory}; keep one"
            )
        if plain.is_file():
            return read_label_png(plain)
        if labeled.is_file():
            return _infer_labels(labeled, directory / f"{stem}.json", vocabulary)
        return None

    return labels


def prediction_names(directory: str | Path) -> str:
    """The file names `from_directory` looks for, for messages."""
    directory = Path(directory)
    return (
        f"{directory / '<id>.png'} holding class ids, or {directory / '<id>_labels.png'} with "
        "<id>.json as 'segdiff infer' writes them"
    )


def _infer_labels(path: Path, record_path: Path, vocabulary: Vocabulary) -> np.ndarray:
    """`segdiff infer`'s label map, re-coded from its own class list to vocabulary ids."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        classes = record["classes"]
    except FileNotFoundError:
        raise SegDiffInputError(
            f"{path.name} has no {record_path.name} beside it: its values are indices into "
            "the class list that file records, so they cannot be scored without it"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise SegDiffInputError(f"cannot read the class list of {record_path}: {err}") from err
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise SegDiffInputError(f"{record_path}: 'classes' must be a list of class names")
    labels = read_label_png(path)
    if list(classes) == list(vocabulary.classes):
        return labels
    ids = {name: i for i, name in enumerate(vocabulary.classes)}
    for i, name in enumerate(vocabulary.classes):
        for synonym in vocabulary.synonyms.get(name, ()):
            ids.setdefault(synonym, i)
    unknown = [name for name in classes if name not in ids]
    if unknown:
        raise SegDiffInputError(
            f"{record_path} lists classes that {vocabulary.name} does not have: {unknown[:5]}; "
            f"segment with 'segdiff infer ... --classes {vocabulary.name}' to score on it"
        )
    return recode(labels, {k: ids[name] for k, name in enumerate(classes)}, len(vocabulary.classes))


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
    permute_classes: bool | None = None,
) -> tuple[Predictor, list[str]]:
    """A SegDiffPipeline (``model`` None: the bundled one) as a Predictor, plus the loader's
    notes for the user; settings left None are the model's. Each image gets a fresh
    generator from ``seed``, so a prediction does not depend on which process makes it, or in
    which order."""
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
            permute_classes=permute_classes,
            generator=generator,
        )
        return output.labels[0]

    return predict, notes
