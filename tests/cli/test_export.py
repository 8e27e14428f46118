import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdiff.cli import app
from segdiff.export import onnx as onnx_export

runner = CliRunner()


def _export(*args):
    return runner.invoke(app, ["export", *map(str, args)])


def _assert_clean_error(result, *fragments, exit_code=2):
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


@pytest.fixture
def only_cam_graph(monkeypatch):
    """ONNX exports of just the CAM graph, so CLI tests reach the end of an export quickly."""
    original = onnx_export.build_graphs
    monkeypatch.setattr(
        onnx_export, "build_graphs", lambda pipe: [g for g in original(pipe) if g.name == "cam"]
    )


def test_a_run_exports_to_a_folder_that_infer_loads(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "recipe.yaml").write_text("name: tiny\n")
    (run / "metrics.json").write_text(json.dumps({"mIoU": 12.0}))
    out = tmp_path / "export"
    result = _export(run, "--out", out, "--dtype", "fp16")
    assert result.exit_code == 0, result.output
    assert "(fp32, fp16) written to" in result.output
    assert {"README.md", "recipe.yaml", "metrics.json", "model_index.json"} <= {
        path.name for path in out.iterdir()
    }
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "image.png")
    infer = runner.invoke(
        app,
        ["infer", str(tmp_path / "image.png"), "-c", "a,b", "--model", str(out)]
        + ["-o", str(tmp_path / "pred"), "--ensemble-size", "1", "--denoise-steps", "1"],
    )
    assert infer.exit_code == 0, infer.output
    assert (tmp_path / "pred" / "image_labels.png").is_file()


def test_onnx_export_reports_each_graph(tmp_path, tiny_model_dir, only_cam_graph):
    result = _export(tiny_model_dir, "--out", tmp_path / "onnx", "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert "cam.onnx: max difference from PyTorch" in result.output
    assert json.loads((tmp_path / "onnx" / "verification.json").read_text())["passed"]


def test_a_non_empty_out_is_replaced_only_with_overwrite(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_clean_error(_export(tiny_model_dir, "--out", out), "pass --overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    result = _export(tiny_model_dir, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "model_index.json").is_file()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("sd2_folder", "not a segdiff model"),
        ("empty_folder", "expected a training run folder"),
        ("out_under_a_file", "cannot write the export"),
        ("out_is_the_model", "holds the model being exported"),
        ("bf16_onnx", "not bf16"),
        ("unknown_dtype", "fp8"),
        ("no_onnxruntime", "pip install segdiff[onnx]"),
        ("verification_fails", "differ from PyTorch by more than"),  # not an input error: 1
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_nothing(
    case, message, tmp_path, tiny_model_dir, tiny_sd2_dir, monkeypatch, only_cam_graph
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    out = tmp_path / "out"
    extra = []
    if case == "sd2_folder":
        model = tiny_sd2_dir
    elif case == "empty_folder":
        model = tmp_path / "empty"
    elif case == "out_under_a_file":
        out = tmp_path / "file" / "out"
    elif case == "out_is_the_model":
        out, extra = model, ["--overwrite"]
    elif case == "bf16_onnx":
        extra = ["--format", "onnx", "--dtype", "bf16"]
    elif case == "unknown_dtype":
        extra = ["--dtype", "fp8"]
    elif case == "no_onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        extra = ["--format", "onnx"]
    elif case == "verification_fails":
        monkeypatch.setitem(onnx_export.TOLERANCE, "fp32", -1.0)
        extra = ["--format", "onnx"]
    before = sorted(path.name for path in tmp_path.iterdir())
    exit_code = 1 if case == "verification_fails" else 2
    _assert_clean_error(_export(model, "--out", out, *extra), message, exit_code=exit_code)
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert (tmp_path / "model" / "model_index.json").is_file()


def test_disk_full_keeps_the_old_export_and_exits_2(tmp_path, tiny_model_dir, monkeypatch):
    import safetensors.torch

    out = tmp_path / "out"
    assert _export(tiny_model_dir, "--out", out).exit_code == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def full(*args, **kwargs):  # safetensors' words for ENOSPC
        raise RuntimeError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    result = _export(tiny_model_dir, "--out", out, "--overwrite")
    _assert_clean_error(result)
    assert f"disk full at {out}" in " ".join(result.output.split())
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_checkpoint_removed_while_reading_asks_to_retry(tmp_path, tiny_model_dir, monkeypatch):
    """Exporting a run that is still training: its trainer may prune the checkpoint picked."""
    from segdiff import run_folder
    from segdiff.model.pipeline import SegDiffPipeline
    from segdiff.training import checkpoints

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: tiny\n")
    pipe = SegDiffPipeline.from_pretrained(tiny_model_dir)
    checkpoints.save_frozen(run, pipe.components)
    final = run_folder.checkpoint_dir(run, 2)
    staging = run_folder.staging_dir(final, fresh=True)
    checkpoints.write_trainable(staging, pipe)
    (staging / run_folder.CHECKPOINT_INFO).write_text('{"step": 2}')
    run_folder.publish_checkpoint(staging, final, keep=1)
    original = checkpoints.load_trainable

    def pruned_meanwhile(checkpoint):
        shutil.rmtree(checkpoint)  # the trainer published a newer one and pruned this
        return original(checkpoint)

    monkeypatch.setattr(checkpoints, "load_trainable", pruned_meanwhile)
    result = _export(run, "--out", tmp_path / "out")
    _assert_clean_error(result)
    said = " ".join(result.output.split())
    assert "was removed while reading it" in said and "retry" in said
    assert "huggingface" not in said.lower()
