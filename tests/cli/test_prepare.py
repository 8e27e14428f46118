import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdiff.cli import app
from segdiff.data.prepared import open_prepared
from segdiff.data.shapes import generate_sample
from segdiff.depth_coding import IGNORE

runner = CliRunner()
SHAPES_SMALL = ["--train-size", "5", "--val-size", "3", "--workers", "1"]


def _prepare(*args):
    return runner.invoke(app, ["prepare", *map(str, args)])


def _assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in flat


def _ade_raw(seed):
    return np.random.default_rng(seed).integers(0, 151, (6, 8)).astype(np.uint8)


@pytest.fixture
def ade_root(tmp_path):
    """ADEChallengeData2016 with 5 validation images and no training split."""
    ade = tmp_path / "src" / "ADEChallengeData2016"
    (ade / "images" / "validation").mkdir(parents=True)
    (ade / "annotations" / "validation").mkdir(parents=True)
    rows = "".join(f"{i}\t0.1\t1\t1\tname {i}\n" for i in range(1, 151))
    (ade / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n" + rows)
    for i in range(5):
        stem = f"ADE_val_{i:08d}"
        Image.new("RGB", (8, 6), (i, 0, 0)).save(ade / "images" / "validation" / f"{stem}.jpg")
        Image.fromarray(_ade_raw(i)).save(ade / "annotations" / "validation" / f"{stem}.png")
    return tmp_path / "src"


def _assert_ade_ground_truth(out, count):
    prepared = open_prepared(out, "val")
    assert len(prepared.image_names) == count
    for name in prepared.image_names:
        raw = _ade_raw(int(name[8:16])).astype(np.int64)
        expected = np.where(raw == 0, IGNORE, raw - 1)
        assert np.array_equal(prepared.benchmark_labels(name), expected)


def test_shapes_end_to_end(tmp_path):
    result = _prepare("shapes", "--out", tmp_path / "out", *SHAPES_SMALL, "--seed", "4")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["splits"] == {"train": 5, "val": 3} and meta["benchmark"] == "shapes"
    prepared = open_prepared(tmp_path / "out", "val")
    for i, name in enumerate(prepared.image_names):
        image, labels = generate_sample((4, 1, i))
        assert np.array_equal(prepared.benchmark_labels(name), labels)
        assert np.array_equal(np.asarray(Image.open(prepared.image_path(name))), image)
    assert "Prepared" in result.output and "classes seen" in result.output


def test_shapes_are_deterministic_and_sized_as_asked(tmp_path):
    for out, seed in (("a", 1), ("b", 1), ("c", 2)):
        args = ("--out", tmp_path / out, *SHAPES_SMALL, "--seed", seed, "--size", "30-40")
        assert _prepare("shapes", *args).exit_code == 0
    masks = {out: [p.read_bytes() for p in sorted((tmp_path / out / "train" / "masks").iterdir())]
             for out in "abc"}  # fmt: skip
    assert masks["a"] == masks["b"] != masks["c"]
    with Image.open(tmp_path / "a" / "train" / "images" / "000000.png") as image:
        assert all(30 <= side <= 40 for side in image.size)


def test_second_run_resumes_without_rewriting(tmp_path):
    out = tmp_path / "out"
    assert _prepare("shapes", "--out", out, *SHAPES_SMALL).exit_code == 0
    mask = out / "train" / "masks" / "000000.png"
    before = (os.stat(mask).st_ino, (out / "train" / "text.json").read_text())
    result = _prepare("shapes", "--out", out, *SHAPES_SMALL)
    assert result.exit_code == 0, result.output
    assert (os.stat(mask).st_ino, (out / "train" / "text.json").read_text()) == before


def test_limit_then_the_rest(ade_root, tmp_path):
    out = tmp_path / "out"
    result = _prepare("ade20k", ade_root, "--out", out, "--limit", "2", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "skipping a split" in result.output  # there is no training folder
    _assert_ade_ground_truth(out, 2)
    assert _prepare("ade20k", ade_root, "--out", out, "--split", "val").exit_code == 0
    _assert_ade_ground_truth(out, 5)


def test_two_workers_give_the_same_dataset(ade_root, tmp_path):
    for workers in ("1", "2"):
        args = ("--out", tmp_path / workers, "--split", "val", "--workers", workers)
        assert _prepare("ade20k", ade_root, *args).exit_code == 0
    _assert_ade_ground_truth(tmp_path / "2", 5)
    serial, parallel = tmp_path / "1" / "val", tmp_path / "2" / "val"
    assert (serial / "text.json").read_text() == (parallel / "text.json").read_text()
    for mask in (serial / "masks").iterdir():
        assert mask.read_bytes() == (parallel / "masks" / mask.name).read_bytes()


def test_corrupt_and_missing_annotations_are_reported_and_skipped(ade_root, tmp_path):
    annotations = ade_root / "ADEChallengeData2016" / "annotations" / "validation"
    (annotations / "ADE_val_00000001.png").write_bytes(b"not a png at all")
    (annotations / "ADE_val_00000003.png").unlink()
    result = _prepare("ade20k", ade_root, "--out", tmp_path / "out", "--workers", "2")
    assert result.exit_code == 2, result.output  # bad files: exit 2, as in every command
    assert "Traceback" not in result.output
    assert "Skipped 2 images" in result.output
    assert "val/ADE_val_00000001: cannot read annotation" in result.output
    assert "val/ADE_val_00000003: annotation not found" in result.output
    _assert_ade_ground_truth(tmp_path / "out", 3)


def test_wrong_layout_names_the_expected_one_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _prepare("ade20k", tmp_path / "empty", "--out", tmp_path / "out")
    _assert_clean_error(result, "does not hold the ade20k dataset", "Expected layout")
    assert not (tmp_path / "out").exists()
    result = _prepare("voc", tmp_path / "missing", "--out", tmp_path / "out")
    _assert_clean_error(result, "does not exist", "VOCdevkit/VOC2012/")
    _assert_clean_error(_prepare("pcontext", "--out", tmp_path / "out"), "ROOT is required")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["imagenet", "x"], "choose one of ade20k"),
        (["ade20k", "x", "--benchmark", "voc21"], "can be prepared for ade150"),
        (["shapes", "some/root"], "give no ROOT"),
        (["shapes", "--size", "big"], "--size is a side or a range"),
        (["shapes", "--size", "80-60"], "MIN <= MAX"),
        (["ade20k", "x", "--seed", "3"], "only apply to shapes"),
        (["shapes", "--split", "test"], "--split must be"),
        (["shapes", "--workers", "0"], "at least 1"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, args, message):
    _assert_clean_error(_prepare(*args, "--out", tmp_path / "out"), message)


def test_an_out_folder_of_another_dataset_is_refused(ade_root, tmp_path):
    assert _prepare("shapes", "--out", tmp_path / "out", *SHAPES_SMALL).exit_code == 0
    result = _prepare("ade20k", ade_root, "--out", tmp_path / "out")
    _assert_clean_error(result, "different dataset")


def test_output_o_and_out_are_one_option(tmp_path):
    for option in ("--output", "-o", "--out"):
        out = tmp_path / option.strip("-")
        assert _prepare("shapes", option, out, *SHAPES_SMALL).exit_code == 0
        assert (out / "meta.json").is_file()
    (tmp_path / "file").write_text("x")
    _assert_clean_error(_prepare("shapes", "-o", tmp_path / "file", *SHAPES_SMALL), "is a file")


def test_a_decompression_bomb_is_reported_and_skipped(ade_root, tmp_path, png_header):
    """A source image whose header claims 20000 x 20000 pixels: skipped with Pillow's limit
    and how to raise it, the rest prepared, exit 2."""
    image = ade_root / "ADEChallengeData2016" / "images" / "validation" / "ADE_val_00000002.jpg"
    png_header(image, 20000, 20000)  # named .jpg: Pillow goes by the content
    result = _prepare("ade20k", ade_root, "-o", tmp_path / "out", "--workers", "1")
    _assert_clean_error(result, "Skipped 1 image", "178,956,970", "SEGDIFF_MAX_IMAGE_PIXELS")
    _assert_ade_ground_truth(tmp_path / "out", 4)


def _start_prepare(out, *extra):
    """``segdiff prepare shapes`` with 2 workers in its own process group (as a terminal runs
    it), once it has written some masks. Large images: each worker takes its tasks in chunks
    of 16, seconds of work it would finish after the main process died."""
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "segdiff", "prepare", "shapes", "--out", str(out),
               "--train-size", "400", "--val-size", "1", "--size", "1024", "--workers", "2",
               *extra]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    masks = out / "train" / "masks"
    deadline = time.monotonic() + 120
    while not (masks.is_dir() and len(list(masks.iterdir())) > 4):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "prepare wrote no masks in 2 minutes"
        time.sleep(0.05)
    return process


def test_ctrl_c_stops_the_workers_quietly_and_says_how_to_continue(tmp_path):
    import signal
    import subprocess

    process = _start_prepare(tmp_path / "out")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # Which of the two a hang is: the main process stuck, or a worker outliving it with
        # the output pipes open (communicate waits for both pipes to close).
        main_exited = process.poll() is not None
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(
            "prepare did not finish within 60 s of Ctrl-C: "
            + ("a worker outlived the main process" if main_exited else "the main process hung")
        )
    assert process.returncode == 130, stderr
    assert "ForkPoolWorker" not in stderr and "Traceback" not in stderr
    assert "Interrupted. The images finished so far are kept: run the same command again" in (
        " ".join(stderr.split())
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads children from /proc")
def test_killing_prepare_kills_its_workers_at_once(tmp_path):
    import contextlib
    import signal
    import time
    from pathlib import Path

    process = _start_prepare(tmp_path / "out")
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 2  # the two pool workers
    process.kill()
    process.wait()

    def running(pid: str) -> bool:  # a dead worker may linger as a zombie until reaped
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 1.0
    try:
        while any(running(pid) for pid in children):
            assert time.monotonic() < deadline, "pool workers outlived the killed main process"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group


def test_disk_full_is_exit_2_and_the_same_command_continues(tmp_path, full_disk, monkeypatch):
    out = tmp_path / "out"
    full_disk("000003")
    result = _prepare("shapes", "--out", out, *SHAPES_SMALL)
    _assert_clean_error(result, "disk full at", "run the same command again")
    kept = sorted(p.name for p in (out / "train" / "masks").iterdir())
    assert kept == ["000000.png", "000001.png", "000002.png"]
    monkeypatch.undo()
    result = _prepare("shapes", "--out", out, *SHAPES_SMALL)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "meta.json").read_text())["splits"] == {"train": 5, "val": 3}
