import os
import stat

import pytest

from segdiff.errors import SegDiffInputError
from segdiff.export.staging import staged_output


def _leftovers(folder):
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


def test_success_replaces_out_with_shareable_modes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_output(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "new.txt").stat().st_mode) == 0o666 & ~umask


def test_failure_leaves_out_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_output(out, overwrite=True) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("export failed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_an_empty_existing_folder_needs_no_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with staged_output(tmp_path / "out") as staging:
        (staging / "a").write_text("a")
    assert (tmp_path / "out" / "a").is_file()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("non_empty", "pass --overwrite"),
        ("file", "is a file"),
        ("under_a_file", "cannot write"),
        ("source", "holds the model"),
        ("parent_of_source", "holds the model"),
    ],
)
def test_bad_outputs_are_refused_before_anything_is_written(tmp_path, case, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    source = tmp_path / "runs" / "run" / "model"
    source.mkdir(parents=True)
    out = {
        "non_empty": tmp_path / "full",
        "file": tmp_path / "file",
        "under_a_file": tmp_path / "file" / "out",
        "source": source,
        "parent_of_source": tmp_path / "runs",
    }[case]
    overwrite = case != "non_empty"
    refused = pytest.raises(SegDiffInputError, match=message)
    with refused, staged_output(out, overwrite=overwrite, read_paths=[source]):
        pytest.fail("must not be reached")
    assert _leftovers(tmp_path) == []
    assert (tmp_path / "full" / "x").is_file() and source.is_dir()


KILLED_BETWEEN_THE_RENAMES = """
import os, signal, sys
from pathlib import Path
from segdiff.export import staging

out = Path(sys.argv[1])
renames = []
original = os.rename

def rename(src, dst):
    renames.append(dst)
    if len(renames) == 2:  # the old folder is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
    original(src, dst)

staging.os.rename = rename
with staging.staged_output(out, overwrite=True) as folder:
    (folder / "new.txt").write_text("new")
"""


def test_killed_between_the_two_renames_the_next_export_restores_the_old_folder(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    done = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_THE_RENAMES, str(out)])
    assert done.returncode == -9
    assert not out.exists()  # the moment the issue describes
    assert len(_leftovers(tmp_path)) == 2  # the old folder aside, the new one staged
    with pytest.raises(SegDiffInputError, match="pass --overwrite"), staged_output(out):
        pytest.fail("the old folder was not put back")
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # put back before anything else
    assert _leftovers(tmp_path) == []  # and the staged folder of the killed export cleared
