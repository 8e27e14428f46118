from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdiff.errors import SegDiffInputError
from segdiff.imageio import atomic_path, load_rgb, save_json


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = load_rgb(tmp_path / "rotated.jpg")
    assert loaded.size == (10, 20)
    top = np.asarray(loaded)[:5].mean()
    bottom = np.asarray(loaded)[-5:].mean()
    assert top > 200 and bottom < 50  # the white left half is now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    gray = np.linspace(0, 1, 64).reshape(8, 8)
    if mode == "I;16":
        image = Image.fromarray((gray * 65535).astype(np.uint16))
    else:
        image = Image.fromarray((gray * 255).astype(np.uint8)).convert(mode)
    image.save(tmp_path / "in.png")
    loaded = load_rgb(tmp_path / "in.png")
    assert loaded.mode == "RGB" and loaded.size == (8, 8)
    brightness = np.asarray(loaded)[..., 0]
    assert brightness[0, 0] < 10 and brightness[-1, -1] > 245  # 16-bit scaled, not clipped


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert np.all(np.asarray(load_rgb(tmp_path / "clear.png")) == 255)


def test_missing_corrupt_and_truncated_images_are_input_errors(tmp_path):
    with pytest.raises(SegDiffInputError, match="not found"):
        load_rgb(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(SegDiffInputError, match="cannot read image"):
        load_rgb(tmp_path / "junk.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SegDiffInputError, match="cannot read image"):
        load_rgb(tmp_path / "cut.jpg")


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "out.json"
    save_json({"v": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_prepared_dataset_images_can_keep_their_stored_orientation(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg", exif_transpose=False).size == (20, 10)


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        OSError(122, "Disk quota exceeded"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_a_full_disk_in_any_library_s_words_is_disk_full_at_the_path(tmp_path, error):
    from segdiff.errors import DiskFullError

    full = pytest.raises(DiskFullError, match=f"disk full at {tmp_path / 'out.json'}")
    with full, atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise error
    assert list(tmp_path.iterdir()) == []  # the partial temporary is gone


def test_other_write_errors_stay_what_they_are(tmp_path):
    with pytest.raises(PermissionError), atomic_path(tmp_path / "out.json"):
        raise PermissionError(13, "Permission denied")


def test_stale_temporaries_are_those_of_ended_processes(tmp_path, stale_temporary):
    from segdiff.imageio import remove_stale_temporaries, temporary_sibling

    mine = temporary_sibling(tmp_path / "a.png")
    mine.write_bytes(b"")
    stale = stale_temporary(tmp_path, "b.png")
    (tmp_path / ".DS_Store").write_bytes(b"")  # a user's hidden file is never touched
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, ".DS_Store"])


def test_a_temporary_of_a_killed_process_nobody_reaped_is_stale(tmp_path):
    """In a container whose first process reaps nothing, a killed worker stays a zombie:
    its pid answers signals, but it writes nothing any more."""
    import subprocess
    import sys
    import time

    from segdiff.imageio import is_stale_temporary

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    leftover = tmp_path / f".a.png.segdiff-tmp-{child.pid}-00c0ffee.png"
    try:
        assert is_stale_temporary(leftover)
    finally:
        child.wait()
