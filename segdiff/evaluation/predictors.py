"""Where predictions come from: a folder of label PNGs, or a model.

Evaluation asks a *label source* for each prepared image name and gets a label map of
benchmark class ids (255 = none in 8-bit maps, 65535 in 16-bit ones), or None when no
prediction exists for that image. A source raises SegDiffInputError for a file it cannot use.
A model's source (`BatchedLabels`) also predicts several images per pipeline call while the
next ones load.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    predict: "Predictor | ModelPredictor", prepared: PreparedSplit, classes: Sequence[str]
) -> LabelSource:
    """Run ``predict`` on each prepared image with the whole benchmark class list; a
    `ModelPredictor` gives a `BatchedLabels`, which also predicts several images at once."""
    if isinstance(predict, ModelPredictor):
        return BatchedLabels(predict, prepared, classes)
    classes = list(classes)

    def labels(image_name: str) -> np.ndarray:
        return np.asarray(predict(_load(prepared, image_name), classes))

    return labels


def _load(prepared: PreparedSplit, image_name: str) -> Image.Image:
    return load_rgb(prepared.image_path(image_name), exif_transpose=False)


class ModelPredictor:
    """A SegDiffPipeline as a Predictor: ``predict(image, classes)``, or
    ``predict.many(images, classes)`` for several images in one pipeline call, whose members
    share UNet calls. Every image gets its own generator seeded with ``seed``, so a
    prediction does not depend on which process makes it, in which order, or beside which
    other images."""

    def __init__(self, pipe, seed: int | None, images_per_call: int, **settings):
        self.pipe = pipe
        self.seed = seed
        self.images_per_call = images_per_call
        self.settings = settings

    def __call__(self, image: Image.Image, classes: Sequence[str]) -> np.ndarray:
        return self.many([image], classes)[0]

    def many(self, images: list[Image.Image], classes: Sequence[str]) -> list[np.ndarray]:
        import torch

        generators = None
        if self.seed is not None:
            generators = [torch.Generator().manual_seed(self.seed) for _ in images]
        output = self.pipe(images, list(classes), generator=generators, **self.settings)
        return output.labels


class BatchedLabels:
    """A model's label source: ``labels(name)`` for one image, and `in_order` for many, a
    pipeline call per ``images_per_call`` images while a thread loads the next ones."""

    def __init__(self, predict: ModelPredictor, prepared: PreparedSplit, classes: Sequence[str]):
        self.predict = predict
        self.prepared = prepared
        self.classes = list(classes)

    def __call__(self, image_name: str) -> np.ndarray:
        return self.predict(_load(self.prepared, image_name), self.classes)

    def in_order(
        self, image_names: list[str]
    ) -> Iterator[tuple[str, np.ndarray | SegDiffInputError]]:
        """(name, labels, or the SegDiffInputError that image raised) in ``image_names`` order."""
        size = max(1, self.predict.images_per_call)
        chunks = [image_names[i : i + size] for i in range(0, len(image_names), size)]
        with ThreadPoolExecutor(max_workers=1) as loader:
            pending = loader.submit(self._load_chunk, chunks[0]) if chunks else None
            for index in range(len(chunks)):
                loaded = pending.result()
                if index + 1 < len(chunks):
                    pending = loader.submit(self._load_chunk, chunks[index + 1])
                yield from self._predict_chunk(loaded)

    def _load_chunk(self, names: list[str]) -> list[tuple[str, Image.Image | SegDiffInputError]]:
        loaded = []
        for name in names:
            try:
                loaded.append((name, _load(self.prepared, name)))
            except SegDiffInputError as err:
                loaded.append((name, err))
        return loaded

    def _predict_chunk(
        self, loaded: list[tuple[str, Image.Image | SegDiffInputError]]
    ) -> list[tuple[str, np.ndarray | SegDiffInputError]]:
        images = [image for _, image in loaded if isinstance(image, Image.Image)]
        labels = iter(self.predict.many(images, self.classes) if images else [])
        return [
            (name, next(labels) if isinstance(image, Image.Image) else image)
            for name, image in loaded
        ]


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
    images_per_call: int = 1,
) -> tuple[ModelPredictor, list[str]]:
    """A SegDiffPipeline (``model`` None: the bundled one) as a `ModelPredictor` that
    segments ``images_per_call`` images per pipeline call, plus the loader's notes for the
    user; settings left None are the model's."""
    from segdiff.model.loading import load_pipeline

    pipe, notes = load_pipeline(model, device, half_precision=half_precision)
    predict = ModelPredictor(
        pipe,
        seed,
        images_per_call,
        num_inference_steps=denoise_steps,
        ensemble_size=ensemble_size,
        processing_resolution=processing_res,
        batch_size=batch_size,
        permute_classes=permute_classes,
    )
    return predict, notes
