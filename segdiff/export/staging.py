"""All-or-nothing output folders: an export is written to a hidden folder next to ``--out``
and renamed onto it only once it is complete, so a failure leaves nothing half-written."""

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from segdiff.errors import SegDiffInputError


def check_output(out: Path, overwrite: bool, read_paths: Sequence[Path] = ()) -> None:
    """Refuse an ``--out`` that is a file, a non-empty folder (unless ``overwrite``), or a
    folder whose replacement would delete what the export reads."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise SegDiffInputError(f"--out {out} is a file; give a folder to export into.")
    for path in read_paths:
        path = path.resolve()
        if out == path or out in path.parents:
            raise SegDiffInputError(
                f"--out {out} holds the model being exported ({path}); replacing it would "
                "delete the source. Choose another folder."
            )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegDiffInputError(
            f"--out {out} already exists and is not empty; pass --overwrite to replace it, "
            "or choose a new folder."
        )


@contextmanager
def staged_output(
    out: Path, overwrite: bool = False, read_paths: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out``, on failure it is removed."""
    out = Path(out).resolve()
    check_output(out, overwrite, read_paths)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as err:
        raise SegDiffInputError(f"cannot write the export to {out}: {err}") from err
    try:
        yield staging
        _make_shareable(staging)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _make_shareable(folder: Path) -> None:
    """Temporary files and folders are private (mode 600/700); an export is meant to be
    shared, so give it the modes the user's umask gives any new file."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace(staging: Path, out: Path) -> None:
    """Rename ``staging`` onto ``out``; an existing ``out`` is moved aside first and deleted
    only after the rename succeeded."""
    if not out.exists():
        os.rename(staging, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, aside / out.name)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(aside / out.name, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside)
