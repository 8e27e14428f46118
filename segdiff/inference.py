"""Segmenting image files: which inputs, which classes, and the four outputs per image."""

import glob
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from segdiff import visualize
from segdiff.depth_coding import MAX_CLASSES, NONE_LABEL
from segdiff.errors import SegDiffInputError
from segdiff.imageio import IMAGE_SUFFIXES, load_rgb, save_json, save_png
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.model.text import check_class_names


def resolve_classes(value: str) -> list[str]:
    """``--classes``: a file (one class a line), a built-in vocabulary name, or "a,b,c"."""
    path = Path(value)
    if _is_file(path):
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
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
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


def output_paths(output_dir: Path, stem: str) -> dict[str, Path]:
    return {
        "labels": output_dir / f"{stem}_labels.png",
        "overlay": output_dir / f"{stem}_overlay.png",
        "uncertainty": output_dir / f"{stem}_uncertainty.png",
        "json": output_dir / f"{stem}.json",
    }


def segment_file(
    pipe: SegDiffPipeline,
    image_path: Path,
    classes: list[str],
    output_dir: Path,
    settings: InferSettings,
) -> dict:
    """Segment one image file and write its four outputs (the JSON last). Returns the JSON."""
    image = load_rgb(image_path)
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
    paths = output_paths(output_dir, image_path.stem)
    save_png(labels, paths["labels"])
    save_png(visualize.overlay(image, labels, classes), paths["overlay"])
    save_png(visualize.uncertainty_image(uncertainty), paths["uncertainty"])
    record = {
        "input": str(image_path),
        "size": {"height": int(labels.shape[0]), "width": int(labels.shape[1])},
        "classes": classes,
        "label_values": {"class index": "0..K-1 in the order of 'classes'", "none": NONE_LABEL},
        "fractions": result.class_fractions[0],
        "none_fraction": float(np.mean(labels == NONE_LABEL)),
        "mean_uncertainty": float(uncertainty.mean()),
        "settings": asdict(settings),
    }
    save_json(record, paths["json"])
    return record


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
    for path in images:
        if skip_existing and output_paths(output_dir, path.stem)["json"].is_file():
            on_done(path, None)
            continue
        try:
            segment_file(pipe, path, classes, output_dir, settings)
        except SegDiffInputError as err:
            failures[path] = str(err)
        on_done(path, failures.get(path))
    return failures
