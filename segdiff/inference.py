"""Segmenting image files: which inputs, which classes, and the four outputs per image."""

import glob
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdiff import visualize
from segdiff.depth_coding import MAX_CLASSES, NONE_LABEL
from segdiff.errors import DiskFullError, SegDiffInputError
from segdiff.imageio import (
    IMAGE_SUFFIXES,
    load_rgb,
    remove_stale_temporaries,
    save_json,
    save_png,
)
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.model.text import check_class_names


def resolve_classes(value: str, read_files: bool = True) -> list[str]:
    """``--classes``: a file (one class a line), a built-in vocabulary name, or "a,b,c".

    ``read_files=False`` never opens a file: the demo page takes this text from strangers.
    """
    path = Path(value)
    if read_files and _is_file(path):
        lines = path.read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    else:
        names = _vocabulary_classes(value.strip()) or value.split(",")
    names = check_class_names(names)
    if len(names) > MAX_CLASSES:
        raise SegDiffInputError(
            f"{len(names)} classes given; label PNGs hold at most {MAX_CLASSES} classes "
            f"(value {NONE_LABEL} means none). Split the list, or use 'segdiff eval' for large "
            "benchmarks."
        )
    return names


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a long comma list is no valid file name
        return False


def _vocabulary_classes(name: str) -> list[str] | None:
    try:
        from segdiff.vocabularies import VOCABULARY_NAMES, get_vocabulary
    except ImportError:
        return None
    return list(get_vocabulary(name).classes) if name in VOCABULARY_NAMES else None


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files from files, folders (searched recursively) and glob patterns, in order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(path))
            )
            if not matches:
                raise SegDiffInputError(
                    f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})"
                )
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise SegDiffInputError(f"input not found: {item} (no file, folder or glob match)")
        found.extend(matches)
    unique = list(dict.fromkeys(found))
    stems: dict[str, Path] = {}
    for path in unique:
        if path.stem in stems:
            raise SegDiffInputError(
                f"two inputs share the name {path.stem!r} ({stems[path.stem]} and {path}); "
                "outputs are named by stem, so segment them into different --output folders"
            )
        stems[path.stem] = path
    return unique


def _hidden(relative: Path) -> bool:
    """Hidden files and folders (temporaries of an interrupted write, macOS ``._`` files)
    are no inputs of a folder run."""
    return any(part.startswith(".") for part in relative.parts)


@dataclass(frozen=True)
class InferSettings:
    """Everything that decides a result; written into each image's JSON."""

    model: str
    num_inference_steps: int
    ensemble_size: int
    processing_resolution: int
    match_input_resolution: bool
    batch_size: int
    permute_classes: bool
    seed: int
    dtype: str


def infer_settings(
    pipe: SegDiffPipeline,
    model: str | None = None,
    *,
    denoise_steps: int | None = None,
    ensemble_size: int | None = None,
    processing_res: int | None = None,
    output_processing_res: bool = False,
    batch_size: int = 0,
    permute_classes: bool = False,
    seed: int | None = None,
) -> InferSettings:
    """The settings of a run: what is not given comes from the model; a missing seed is drawn."""
    config = pipe.config
    return InferSettings(
        model=str(model or "bundled tiny shapes model"),
        num_inference_steps=denoise_steps or config.default_denoising_steps,
        ensemble_size=ensemble_size or config.default_ensemble_size,
        processing_resolution=(
            config.default_processing_resolution if processing_res is None else processing_res
        ),
        match_input_resolution=not output_processing_res,
        batch_size=batch_size,
        permute_classes=permute_classes,
        seed=secrets.randbelow(2**31) if seed is None else seed,
        dtype=str(pipe.dtype).removeprefix("torch."),
    )


UNCERTAINTY_NOT_MEASURED = (
    "not measured: one ensemble member cannot disagree with itself (an ensemble of 2 or more "
    "measures it)"
)


def output_paths(output_dir: Path, stem: str) -> dict[str, Path]:
    return {
        "labels": output_dir / f"{stem}_labels.png",
        "overlay": output_dir / f"{stem}_overlay.png",
        "uncertainty": output_dir / f"{stem}_uncertainty.png",
        "uncertainty_color": output_dir / f"{stem}_uncertainty_color.png",
        "json": output_dir / f"{stem}.json",
    }


@dataclass(frozen=True)
class Segmentation:
    """One image's results in memory: the outputs ``segment_file`` writes."""

    labels: np.ndarray
    overlay: Image.Image
    uncertainty: Image.Image | None
    """8-bit gray, the data (0 = all members agree); None with one ensemble member."""
    uncertainty_color: Image.Image | None
    """The uncertainty as a heat map over the image, for people; None with one member."""
    record: dict


def segment_image(
    pipe: SegDiffPipeline,
    image: Image.Image,
    classes: list[str],
    settings: InferSettings,
    source: str,
) -> Segmentation:
    """Segment one RGB image; ``source`` names it in the record."""
    generator = torch.Generator().manual_seed(settings.seed)
    result = pipe(
        image,
        classes,
        num_inference_steps=settings.num_inference_steps,
        ensemble_size=settings.ensemble_size,
        processing_resolution=settings.processing_resolution,
        match_input_resolution=settings.match_input_resolution,
        batch_size=settings.batch_size,
        permute_classes=settings.permute_classes,
        generator=generator,
    )
    labels, uncertainty = result.labels[0], result.uncertainty[0]
    if labels.shape != (image.height, image.width):
        image = image.resize((labels.shape[1], labels.shape[0]))
    measured = settings.ensemble_size > 1
    record = {
        "input": source,
        "size": {"height": int(labels.shape[0]), "width": int(labels.shape[1])},
        "classes": classes,
        "label_values": {"class index": "0..K-1 in the order of 'classes'", "none": NONE_LABEL},
        "fractions": result.class_fractions[0],
        "none_fraction": float(np.mean(labels == NONE_LABEL)),
        "mean_uncertainty": float(uncertainty.mean()) if measured else None,
        **({} if measured else {"uncertainty": UNCERTAINTY_NOT_MEASURED}),
        "settings": asdict(settings),
    }
    return Segmentation(
        labels=labels,
        overlay=visualize.overlay(image, labels, classes),
        uncertainty=visualize.uncertainty_image(uncertainty) if measured else None,
        uncertainty_color=visualize.uncertainty_view(image, uncertainty) if measured else None,
        record=record,
    )


def write_segmentation(segmentation: Segmentation, output_dir: Path, stem: str) -> dict[str, Path]:
    """Write the outputs (the JSON last, so its presence means a complete result); returns
    those written. Without uncertainty, an earlier run's uncertainty files of this stem go."""
    paths = output_paths(output_dir, stem)
    pictures = {
        "labels": segmentation.labels,
        "overlay": segmentation.overlay,
        "uncertainty": segmentation.uncertainty,
        "uncertainty_color": segmentation.uncertainty_color,
    }
    for name, picture in pictures.items():
        if picture is None:
            paths.pop(name).unlink(missing_ok=True)
        else:
            save_png(picture, paths[name])
    save_json(segmentation.record, paths["json"])
    return paths


def segment_file(
    pipe: SegDiffPipeline,
    image_path: Path,
    classes: list[str],
    output_dir: Path,
    settings: InferSettings,
) -> dict:
    """Segment one image file and write its four outputs. Returns the JSON record."""
    segmentation = segment_image(pipe, load_rgb(image_path), classes, settings, str(image_path))
    write_segmentation(segmentation, output_dir, image_path.stem)
    return segmentation.record


def segment_files(
    pipe: SegDiffPipeline,
    images: list[Path],
    classes: list[str],
    output_dir: Path,
    settings: InferSettings,
    skip_existing: bool = False,
    on_done: Callable[[Path, str | None], None] = lambda path, error: None,
) -> dict[Path, str]:
    """Segment every image; a bad image is reported through ``on_done`` and skipped, so one
    corrupt file never stops a folder run. Returns the failures (path -> message)."""
    failures: dict[Path, str] = {}
    remove_stale_temporaries(output_dir)
    for path in images:
        if skip_existing and output_paths(output_dir, path.stem)["json"].is_file():
            on_done(path, None)
            continue
        try:
            segment_file(pipe, path, classes, output_dir, settings)
        except DiskFullError:
            raise  # every later image would fail the same way
        except SegDiffInputError as err:
            failures[path] = str(err)
        on_done(path, failures.get(path))
    return failures
