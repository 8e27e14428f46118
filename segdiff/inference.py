"""Segmenting image files: which inputs, the outputs per image, and resuming a folder.

The class list comes from `segdiff.class_lists`. Torch and the model are imported only when
an image is segmented, so the command line checks its inputs first, quickly.
"""

import glob
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from segdiff import visualize
from segdiff.depth_coding import NONE_LABEL
from segdiff.errors import DiskFullError, SegDiffInputError
from segdiff.imageio import (
    IMAGE_SUFFIXES,
    load_rgb,
    remove_stale_temporaries,
    save_json,
    save_png,
)

if TYPE_CHECKING:
    from segdiff.model.pipeline import SegDiffPipeline

MAX_SEED = 2**32 - 1
"""Seeds run from 0 to this (what every random generator segdiff seeds accepts)."""


def check_seed(seed: int | None, name: str = "--seed") -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise SegDiffInputError(f"{name} must be between 0 and {MAX_SEED}, got {seed}")


def collect_images(inputs: list[str]) -> tuple[list[Path], dict[Path, str]]:
    """Image files from files, folders (searched recursively) and glob patterns, in order,
    and the files left out (path -> why): a name that is not valid UTF-8 cannot be recorded
    in the JSON output, so that file alone is skipped."""
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
    images: list[Path] = []
    left_out: dict[Path, str] = {}
    for path in dict.fromkeys(found):
        if _is_utf8(str(path)):
            images.append(path)
        else:
            left_out[path] = "its name is not valid UTF-8; rename the file to segment it"
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems:
            raise SegDiffInputError(
                f"two inputs share the name {path.stem!r} ({stems[path.stem]} and {path}); "
                "outputs are named by stem, so segment them into different --output folders"
            )
        stems[path.stem] = path
    return images, left_out


def printable_path(path: Path) -> str:
    """``path`` for a message, bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a file name, kept as surrogates
        return False
    return True


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
    pipe: "SegDiffPipeline",
    model: str | None = None,
    *,
    denoise_steps: int | None = None,
    ensemble_size: int | None = None,
    processing_res: int | None = None,
    output_processing_res: bool = False,
    batch_size: int = 0,
    permute_classes: bool | None = None,
    seed: int | None = None,
) -> InferSettings:
    """The settings of a run: what is not given comes from the model; a missing seed is drawn."""
    check_seed(seed)
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
        permute_classes=(
            config.default_permute_classes if permute_classes is None else permute_classes
        ),
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
    pipe: "SegDiffPipeline",
    image: Image.Image,
    classes: list[str],
    settings: InferSettings,
    source: str,
) -> Segmentation:
    """Segment one RGB image; ``source`` names it in the record."""
    import torch

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
    pipe: "SegDiffPipeline",
    image_path: Path,
    classes: list[str],
    output_dir: Path,
    settings: InferSettings,
) -> dict:
    """Segment one image file and write its outputs. Returns the JSON record."""
    segmentation = segment_image(pipe, load_rgb(image_path), classes, settings, str(image_path))
    write_segmentation(segmentation, output_dir, image_path.stem)
    return segmentation.record


@dataclass
class FolderRun:
    """What `segment_files` did."""

    failures: dict[Path, str] = field(default_factory=dict)
    """Images that could not be segmented, and why."""
    skipped: list[Path] = field(default_factory=list)
    """Images whose outputs an earlier run wrote with the same input, classes and settings."""
    redone: list[Path] = field(default_factory=list)
    """Images whose earlier outputs had other classes or settings, or were incomplete,
    segmented again."""


def segment_files(
    pipe: "SegDiffPipeline",
    images: list[Path],
    classes: list[str],
    output_dir: Path,
    settings: InferSettings,
    skip_existing: bool = False,
    on_done: Callable[[Path, str | None], None] = lambda path, error: None,
    seed_given: bool = True,
) -> FolderRun:
    """Segment every image; a bad image is reported through ``on_done`` and skipped, so one
    corrupt file never stops a folder run; a full disk stops it (every later image would
    fail the same way). Temporaries a killed run left in ``output_dir`` are removed first.

    ``skip_existing`` skips an image whose JSON records the same input, classes and
    settings (a resumed run); outputs of other classes or settings are written again. With
    ``seed_given`` False (the seed was drawn for this run), any recorded seed matches.
    """
    run = FolderRun()
    remove_stale_temporaries(output_dir)
    for path in images:
        if skip_existing:
            json_path = output_paths(output_dir, path.stem)["json"]
            if _matches_record(json_path, path, classes, settings, seed_given):
                run.skipped.append(path)
                on_done(path, None)
                continue
            if json_path.exists():
                run.redone.append(path)
        try:
            segment_file(pipe, path, classes, output_dir, settings)
        except DiskFullError:
            raise  # every later image would fail the same way
        except SegDiffInputError as err:
            run.failures[path] = str(err)
        on_done(path, run.failures.get(path))
    return run


def _matches_record(
    json_path: Path,
    image_path: Path,
    classes: list[str],
    settings: InferSettings,
    seed_given: bool,
) -> bool:
    """Whether ``json_path`` records outputs of this image with these classes and settings,
    and the pictures those settings give are all there (no uncertainty with one member)."""
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        recorded_input = Path(record["input"]).resolve()
        recorded_classes, recorded_settings = record["classes"], dict(record["settings"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False  # missing or unreadable: segment again
    wanted = asdict(settings)
    if not seed_given:
        wanted.pop("seed")
        recorded_settings.pop("seed", None)
    pictures = output_paths(json_path.parent, image_path.stem)
    del pictures["json"]
    if settings.ensemble_size == 1:
        del pictures["uncertainty"], pictures["uncertainty_color"]
    return (
        recorded_input == image_path.resolve()
        and recorded_classes == classes
        and recorded_settings == wanted
        and all(path.is_file() for path in pictures.values())
    )
