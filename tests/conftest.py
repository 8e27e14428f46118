"""Shared fixtures: tiny models built from configs, a tiny prepared shapes dataset; nothing
is ever downloaded."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipeline():
    """An untrained tiny SegDiffPipeline (seeded), processing at 32 px."""
    from segdiff.model.pipeline import SegDiffPipeline
    from segdiff.model.tiny import build_tiny_components

    pipe = SegDiffPipeline(
        **build_tiny_components(seed=0, none_token=True),
        default_processing_resolution=32,
        default_denoising_steps=2,
        default_ensemble_size=2,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline saved as a segdiff model folder."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory):
    """A tiny Stable Diffusion 2-layout folder (4-channel UNet, no CAM)."""
    from segdiff.model.tiny import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd2"), seed=0)


@pytest.fixture(scope="session")
def write_prepared():
    """``write(root, benchmark, vocabulary, labels)`` -> root: a prepared dataset with one val
    split, written by segdiff's own PreparedWriter from ``labels`` (image id -> vocabulary ids,
    255 = ignore) and random RGB images of the same size."""
    import numpy as np

    from segdiff.data.writer import Converted, Job, PreparedWriter
    from segdiff.depth_coding import IGNORE

    def write(root, benchmark, vocabulary, labels):
        rng = np.random.default_rng(0)
        jobs = []
        for image_id, ids in labels.items():
            ids = np.asarray(ids).astype(np.uint16)
            ids[ids == 255] = IGNORE
            pixels = rng.integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
            sample = Converted(labels=ids, image=pixels)
            jobs.append(Job(name=image_id, convert=lambda sample=sample: sample))
        PreparedWriter(root, benchmark, benchmark, vocabulary).write_split("val", jobs)
        return root

    return write


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """16 train and 4 val shapes images of 32 px, made by `segdiff prepare`."""
    from typer.testing import CliRunner

    from segdiff.cli import app

    root = tmp_path_factory.mktemp("shapes")
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "shapes",
            "--out",
            str(root),
            "--train-size",
            "16",
            "--val-size",
            "4",
            "--size",
            "32",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session")
def png_header():
    """``write(path, width, height)``: a PNG whose header claims width x height 8-bit gray
    pixels and holds none; Pillow reads the size (and refuses a decompression bomb) from it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    def write(path: Path, width: int, height: int) -> Path:
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
        return path

    return write


@pytest.fixture(scope="session")
def stale_temporary():
    """``stale(folder, name, data=b"")`` -> the hidden temporary that a segdiff process killed
    while writing ``folder/name`` leaves behind (named with that process's id, now gone)."""
    import subprocess
    import sys

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()

    def stale(folder: Path, name: str, data: bytes = b"") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f".{name}.segdiff-tmp-{ended}-00c0ffee{Path(name).suffix}"
        path.write_bytes(data)
        return path

    return stale


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(where, error=ENOSPC)``: from then on, saving a picture whose path holds
    ``where`` fails as it does on a full disk (or quota)."""
    import errno

    from PIL import Image

    original = Image.Image.save

    def fill(where: str, error: int = errno.ENOSPC) -> None:
        def save(image, fp, *args, **kwargs):
            if where in str(fp):
                raise OSError(error, os.strerror(error))
            return original(image, fp, *args, **kwargs)

        monkeypatch.setattr(Image.Image, "save", save)

    return fill
