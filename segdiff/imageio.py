"""Reading user images robustly and writing every output atomically.

Outputs go to a temporary file in the destination folder and are renamed into place, so an
interrupted run never leaves a half-written file that a resumed run would trust.
"""

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.Image import DecompressionBombError

from segdiff.errors import SegDiffInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_READ_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    DecompressionBombError,
)
"""What Pillow raises for a file it cannot read as an image; `image_read_error` words it."""
MAX_PIXELS_ENV = "SEGDIFF_MAX_IMAGE_PIXELS"
"""Environment variable: the most pixels an image may have (default: Pillow's guard against
decompression bombs, 2 x Image.MAX_IMAGE_PIXELS = 178,956,970 pixels)."""


def apply_max_image_pixels() -> None:
    """Set Pillow's limit from SEGDIFF_MAX_IMAGE_PIXELS when it is set; SegDiffInputError for
    a value that is no whole number. Done on import, and by the command line, which reports a
    bad value before any work."""
    text = os.environ.get(MAX_PIXELS_ENV, "")
    value = text.replace("_", "").replace(",", "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 2:
        raise SegDiffInputError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got {text!r}")
    # Pillow refuses images over twice its MAX_IMAGE_PIXELS (and warns above it).
    Image.MAX_IMAGE_PIXELS = int(value) // 2


with suppress(SegDiffInputError):  # a bad value: the command line reports it
    apply_max_image_pixels()


def image_read_error(path: str | Path, err: Exception, what: str = "image") -> SegDiffInputError:
    """The message for an image Pillow cannot open (``err`` one of IMAGE_READ_ERRORS)."""
    if isinstance(err, DecompressionBombError):
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        size = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f" ({int(size[1]):,})" if size else ""
        return SegDiffInputError(
            f"cannot read {what} {path}: it has more pixels{pixels} than the {limit:,} that "
            "segdiff opens, a guard against decompression bombs (images made to fill the "
            f"memory). If you trust the file, raise the limit with the environment variable "
            f"{MAX_PIXELS_ENV}, e.g. {MAX_PIXELS_ENV}={int(size[1]) if size else 2 * limit}."
        )
    return SegDiffInputError(f"cannot read {what} {path}: {err}")


def load_rgb(path: str | Path, exif_transpose: bool = True) -> Image.Image:
    """Open an image as 8-bit RGB: gray/RGBA/16-bit converted, EXIF orientation applied.

    Dataset annotations are drawn on the stored pixels, whatever the EXIF tag says, so
    images of a prepared dataset are read with ``exif_transpose=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise SegDiffInputError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
    except IMAGE_READ_ERRORS as err:
        raise image_read_error(path, err) from err
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; 16-bit and float images are scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            top = max(float(arr.max()), 1e-12)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_png(array_or_image: np.ndarray | Image.Image, dest: str | Path) -> None:
    image = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(np.ascontiguousarray(array_or_image))
    )
    with atomic_path(dest) as tmp:
        image.save(tmp, format="PNG")


def read_json_object(path: str | Path, remedy: str = "") -> dict[str, Any]:
    """A JSON object from a UTF-8 file; SegDiffInputError (ending in ``remedy``) for a file
    that is missing, unreadable, not JSON, or JSON but no object."""
    end = f"; {remedy}" if remedy else ""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SegDiffInputError(f"{path} is not readable UTF-8 JSON ({err}){end}") from err
    if not isinstance(data, dict):
        shown = repr(data) if len(repr(data)) <= 60 else repr(data)[:57] + "..."
        raise SegDiffInputError(
            f"{path} must hold a JSON object, got a {type(data).__name__} ({shown}){end}"
        )
    return data


def save_json(data: Any, dest: str | Path) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_text(text: str, dest: str | Path) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
