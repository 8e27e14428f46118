"""Reading user images robustly and writing every output atomically.

Outputs go to a temporary file in the destination folder and are renamed into place, so an
interrupted run never leaves a half-written file that a resumed run would trust. This module
owns how such temporaries look (hidden, named ``.<name>.segdiff-tmp-<pid>-<token>``): they are
created by an ordinary write, so they get the mode the umask gives any new file, and a later
run recognises the ones whose process is gone and removes them.
"""

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.Image import DecompressionBombError

from segdiff.errors import DiskFullError, SegDiffInputError

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


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "os error 28",
    "unexpected pos",
)
"""How a full disk reads in the errors of libraries that do not raise OSError: safetensors
says "No space left on device (os error 28)", torch.save "unexpected pos N vs M"."""


def temporary_sibling(dest: str | Path, kind: str = "tmp") -> Path:
    """A fresh hidden path beside ``dest`` to write it under (a file or a folder):
    ``.<name>.segdiff-<kind>-<pid>-<token><suffix>``. Its name ends with ``dest``'s suffix,
    since some writers (numpy) add one otherwise."""
    dest = Path(dest)
    token = secrets.token_hex(4)
    return dest.with_name(f".{dest.name}.segdiff-{kind}-{os.getpid()}-{token}{dest.suffix}")


def is_stale_temporary(path: Path, kind: str = "tmp") -> bool:
    """A `temporary_sibling` of this kind whose process has ended (killed, crashed)."""
    mark = f".segdiff-{kind}-"
    if not path.name.startswith(".") or mark not in path.name:
        return False
    pid = path.name.rsplit(mark, 1)[1].split("-", 1)[0]
    return not pid.isdigit() or not _process_alive(int(pid))


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs; a killed one that nobody reaped yet (a zombie,
    common in containers) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: alive as far as we can tell
    return state != "Z"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed run left in ``folder`` (not below it); the removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [path for path in folder.iterdir() if is_stale_temporary(path)]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS:
        return True
    return any(text in str(err) for text in _DISK_FULL_TEXTS)


@contextmanager
def reporting_disk_full(path: str | Path) -> Iterator[None]:
    """Turn a full disk while writing ``path``, whichever library noticed, into DiskFullError."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if is_disk_full(err):
            raise DiskFullError(path) from err
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (changing it, even
    for an instant, would give another thread's new file the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def make_shareable(path: str | Path) -> None:
    """Give ``path`` (and all below it) the modes an ordinary write gets under the umask.

    For folders written by libraries that create private files (safetensors writes 0600, as
    do temporary files and folders): a model, checkpoint or export is meant to be shared.
    Only for what segdiff wrote itself: a hard link to a user's file would change that file.
    """
    path = Path(path)
    umask = current_umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success.

    The path does not exist yet: the caller's ordinary write creates it, with the mode the
    umask gives (a pre-created temporary file would be private, 0600).
    """
    dest = Path(dest)
    tmp = temporary_sibling(dest)
    try:
        with reporting_disk_full(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


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
