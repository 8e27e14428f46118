"""All-or-nothing output folders: an export is written to a hidden folder next to ``--output``
and renamed onto it only once it is complete, so a failure leaves nothing half-written.

Replacing an existing ``--output`` takes two renames: the old folder moves aside (to
``.<out>.segdiff-old-<pid>-<token>``), then the new one moves in. A run killed between the two
leaves ``--output`` missing and the old folder aside; the next export to the same place puts it
back first, and clears any staging folder a killed export left.
"""

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from segdiff.errors import SegDiffInputError
from segdiff.imageio import (
    is_stale_temporary,
    make_shareable,
    remove_stale_temporaries,
    reporting_disk_full,
    temporary_sibling,
)


def check_output(out: Path, overwrite: bool, read_paths: Sequence[Path] = ()) -> None:
    """Refuse an ``--output`` that is a file, a non-empty folder (unless ``overwrite``), or a
    folder whose replacement would delete what the export reads."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise SegDiffInputError(f"--output {out} is a file; give a folder to export into.")
    for path in read_paths:
        path = path.resolve()
        if out == path or out in path.parents:
            raise SegDiffInputError(
                f"--output {out} holds the model being exported ({path}); replacing it would "
                "delete the source. Choose another folder."
            )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegDiffInputError(
            f"--output {out} already exists and is not empty; pass --overwrite to replace it, "
            "or choose a new folder."
        )


def recover(out: Path) -> None:
    """Undo what an export killed on its way to ``out`` left: an old ``out`` moved aside is
    put back (or deleted, if the new one made it into place), staging folders are removed."""
    if not out.parent.is_dir():
        return
    for aside in out.parent.glob(f".{out.name}.segdiff-old-*"):
        if not is_stale_temporary(aside, kind="old"):
            continue  # an export running right now
        if not out.exists() and (aside / out.name).is_dir():
            os.rename(aside / out.name, out)
        shutil.rmtree(aside, ignore_errors=True)
    remove_stale_temporaries(out.parent)


@contextmanager
def staged_output(
    out: Path, overwrite: bool = False, read_paths: Sequence[Path] = ()
) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out``, on failure it is removed.

    Everything in it then gets the modes the user's umask gives any new file (safetensors
    writes private files): an export is meant to be shared.
    """
    out = Path(out).resolve()
    recover(out)
    check_output(out, overwrite, read_paths)
    staging = temporary_sibling(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        raise SegDiffInputError(f"cannot write the export to {out}: {err}") from err
    try:
        with reporting_disk_full(out):
            yield staging
        make_shareable(staging)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out: Path) -> None:
    """Rename ``staging`` onto ``out``; an existing ``out`` is moved aside first and deleted
    only after the rename succeeded."""
    if not out.exists():
        os.rename(staging, out)
        return
    aside = temporary_sibling(out, kind="old")
    aside.mkdir()
    os.rename(out, aside / out.name)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(aside / out.name, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside)
