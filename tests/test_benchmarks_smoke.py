"""The benchmark scripts run end to end with their smallest settings, so they cannot rot."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from segdiff.cli import app

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL_RUN = ["--threads", "1", "--rounds", "1"]


def _run_script(name: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    options = ["--split", "val", "--val-size", "2", "--size", "32", "--workers", "1"]
    result = CliRunner().invoke(app, ["prepare", "shapes", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return out


def test_bench_infer_compares_baseline_and_segdiff_with_accuracy(
    tiny_model_dir, shapes_val, tmp_path
):
    report = tmp_path / "infer.json"
    stdout = _run_script(
        "bench_infer.py",
        *SMALL_RUN,
        *("--model", str(tiny_model_dir), "--resolution", "32"),
        *("--steps", "1", "--ensemble", "2", "--images", "1"),
        *("--data", str(shapes_val), "--limit", "1", "--json", str(report)),
        *("--peak-tflops", "1.0", "--dtype", "fp32", "bf16-autocast", "bf16"),
    )
    payload = json.loads(report.read_text())
    rows = payload["rows"]
    settings = [(row["setting"]["method"], row["setting"]["dtype"]) for row in rows]
    assert settings == [
        ("baseline", "fp32"), ("segdiff", "fp32"), ("segdiff", "bf16-autocast"), ("segdiff", "bf16")
    ]  # fmt: skip
    assert all(row["seconds_per_image"] > 0 for row in rows)
    assert all(0 <= row["miou"] <= 100 for row in rows)
    assert "| 32 | baseline-1x2 |" in stdout and "| 32 | segdiff-bf16-autocast-1x2 |" in stdout
    assert "(square, of each resolution)" in stdout  # equal work: the same pixels
    # the tiny UNet at 16x16 latents does a few MFLOPs per sample, well under a GFLOP
    assert 1e6 < payload["unet"]["32"]["flops_per_sample"] < 1e9
    assert "% of 1 TFLOP/s peak" in stdout


def test_bench_train_reports_each_precision(tmp_path):
    report = tmp_path / "train.json"
    stdout = _run_script(
        "bench_train.py",
        *SMALL_RUN,
        *("--resolution", "32", "--batch-size", "1", "--steps", "1"),
        *("--precision", "fp32", "bf16", "--json", str(report)),
    )
    payload = json.loads(report.read_text())
    rows = payload["rows"]
    assert set(rows) == {"fp32", "bf16"}
    assert all(row["samples_per_second"] > 0 for row in rows.values())
    assert "| fp32 |" in stdout and "MFU (of fp32 peak)" in stdout
    # MFU = 3 x forward FLOPs x samples/s / measured peak, a fraction well under 1
    for row in rows.values():
        expected = row["samples_per_second"] * payload["flops_per_sample"] / payload["peak_flops"]
        assert row["mfu"] == pytest.approx(expected) and 0 < row["mfu"] < 1
    assert 1e6 < payload["flops_per_sample"] < 1e10 and payload["peak_flops"] > 1e8


def test_sd2_configs_have_the_published_parameter_counts():
    spec = importlib.util.spec_from_file_location("_common", BENCHMARKS / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = common.SD2_CONFIGS
    with torch.device("meta"):  # shapes only: no memory, no time
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, **configs["text_encoder"]))
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in text.parameters()) == 340_387_840


def test_kill_test_kills_reruns_and_compares(tmp_path):
    """Two of its trials: prepare and infer, each killed while writing an output."""
    report = tmp_path / "kills.json"
    stdout = _run_script(
        "kill_test.py", "--commands", "prepare,infer", "--repeats", "1", "--moments", "while",
        "--work", str(tmp_path / "work"), "--json", str(report),
    )  # fmt: skip
    rows = json.loads(report.read_text())["rows"]
    assert [(row["command"], row["failures"]) for row in rows] == [
        ("prepare", []), ("infer", [])
    ]  # fmt: skip
    assert sum(row["trials"] + row["missed"] for row in rows) == 2
    assert "| prepare | while masks are written |" in stdout
