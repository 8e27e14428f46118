"""`segdiff eval` end to end on a tiny prepared shapes dataset written in tmp_path."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdiff.cli import app
from segdiff.vocabularies import get_vocabulary

runner = CliRunner()
SHAPES = get_vocabulary("shapes").classes  # background, circle, square, triangle, ...
N = 255  # ignore in ground truth, none in predictions

GT = {
    "a": np.array([[0, 0, 1, 1], [0, 0, 1, N]]),
    "b": np.array([[2, 2, 2, 0], [2, 2, 0, 0]]),
}
PRED = {
    "a": np.array([[0, 0, 1, 0], [0, N, 1, 2]]),
    "b": np.array([[2, 0, 0, 0], [2, 2, 0, 0]]),
}
# By hand: gt pixels background 7, circle 3, square 5 (the ignored pixel is not scored);
# TP 6, 2, 3; predicted 9, 2, 3 (the none pixel counts for no class).
# IoU = TP / (gt + pred - TP): 6/10, 2/3, 3/5.
EXPECTED = {
    "mIoU": 100 * (0.6 + 2 / 3 + 0.6) / 3,
    "pixel_accuracy": 100 * 11 / 15,
    "mean_accuracy": 100 * (6 / 7 + 2 / 3 + 3 / 5) / 3,
    "fwIoU": 100 * (7 / 15 * 0.6 + 3 / 15 * 2 / 3 + 5 / 15 * 0.6),
}


def write_predictions(folder: Path, predictions: dict[str, np.ndarray], dtype=np.uint8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, labels in predictions.items():
        Image.fromarray(labels.astype(dtype)).save(folder / f"{image_id}.png")
    return folder


@pytest.fixture
def shapes_data(tmp_path, write_prepared) -> Path:
    return write_prepared(tmp_path / "data" / "shapes", "shapes", SHAPES, GT)


def run_eval(*args, env=None):
    return runner.invoke(app, ["eval", *map(str, args)], env=env)


def flat(output: str) -> str:
    """Terminal output with line wrapping undone."""
    return " ".join(output.split())


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in flat(result.output)


def assert_expected_metrics(metrics: dict) -> None:
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value), key
    assert metrics["per_class"]["background"] == pytest.approx(60.0)
    assert metrics["per_class"]["circle"] == pytest.approx(200 / 3)
    assert metrics["per_class"]["square"] == pytest.approx(60.0)
    assert metrics["per_class"]["star"] is None


def test_predictions_end_to_end(tmp_path, shapes_data):
    predictions = write_predictions(tmp_path / "pred", PRED)
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert_expected_metrics(metrics)
    assert (metrics["benchmark"], metrics["split"], metrics["images"]) == ("shapes", "val", 2)
    assert metrics["settings"]["predictions"] == str(predictions.resolve())
    assert (out / "per_class.csv").read_text().startswith("id,class,iou,")
    assert Image.open(out / "confusion.png").width > 7 * 30
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["00_a.png", "01_b.png"]
    assert "62.22" in result.output and "mIoU" in result.output  # the terminal table


def test_sixteen_bit_predictions_score_the_same(tmp_path, shapes_data):
    sixteen = {k: np.where(v == N, 65535, v) for k, v in PRED.items()}
    predictions = write_predictions(tmp_path / "pred16", sixteen, dtype=np.uint16)
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert result.exit_code == 0, result.output
    assert_expected_metrics(json.loads((out / "metrics.json").read_text()))


def test_data_from_env_and_numbered_default_output(tmp_path, shapes_data, monkeypatch):
    predictions = write_predictions(tmp_path / "pred", PRED)
    monkeypatch.chdir(tmp_path)
    env = {"SEGDIFF_DATA": str(tmp_path / "data")}
    for _ in range(2):
        result = run_eval("shapes", "--predictions", predictions, env=env)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "eval" / "shapes" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "eval" / "shapes-2" / "metrics.json").is_file()


def test_voc20_finds_voc21_data_under_segdiff_data(tmp_path, write_prepared):
    voc21 = get_vocabulary("voc21").classes
    write_prepared(tmp_path / "voc21", "voc21", voc21, {"x": np.array([[0, 1], [15, N]])})
    predictions = write_predictions(tmp_path / "pred", {"x": np.array([[N, 0], [14, 3]])})
    out = tmp_path / "out"
    env = {"SEGDIFF_DATA": str(tmp_path)}
    result = run_eval("voc20", "--predictions", predictions, "-o", out, env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mIoU"] == 100.0  # background and boundary ignored
    assert "background" not in metrics["per_class"] and len(metrics["per_class"]) == 20


def test_out_of_range_values_are_counted_not_fatal(tmp_path, shapes_data):
    bad = {"a": PRED["a"].copy(), "b": PRED["b"]}
    bad["a"][0, 0] = 7  # shapes has ids 0..6
    predictions = write_predictions(tmp_path / "pred", bad)
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert result.exit_code == 0, result.output
    assert "1 predicted pixels in 1 images hold no class id of shapes" in flat(result.output)
    problems = json.loads((out / "metrics.json").read_text())["problems"]
    assert problems["out_of_range_pixels"] == 1 and problems["out_of_range_examples"] == ["a.png"]


def test_missing_predictions_are_reported_and_the_rest_scored(tmp_path, shapes_data):
    predictions = write_predictions(tmp_path / "pred", {"a": PRED["a"]})
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert result.exit_code == 0, result.output
    assert "1 of 2 images have no prediction and were not scored: b.png" in flat(result.output)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 1 and metrics["problems"]["missing_predictions"] == 1


def test_wrong_size_prediction_exits_2_after_scoring_the_rest(tmp_path, shapes_data):
    predictions = write_predictions(tmp_path / "pred", {"a": PRED["a"], "b": PRED["b"][:, :3]})
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert_clean_error(result, "b.png: prediction has shape (2, 3), ground truth (2, 4)")
    assert_clean_error(result, "1 of 2 images could not be scored")
    assert json.loads((out / "metrics.json").read_text())["problems"]["failed_images"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["voc", "--data", "{data}"], "unknown benchmark 'voc'"),
        (["shapes", "--predictions", "{pred}"], "no --data given and SEGDIFF_DATA is not set"),
        (["shapes", "--data", "{tmp}/nowhere", "--predictions", "{pred}"], "meta.json is missing"),
        (["shapes", "--data", "{data}", "--split", "train", "--predictions", "{pred}"], "'train'"),
        (["shapes", "--data", "{data}", "--predictions", "{tmp}/nope"], "predictions folder not"),
        (["shapes", "--data", "{data}", "--predictions", "{pred}", "--model", "m"], "not both"),
        (["voc21", "--data", "{data}", "--predictions", "{pred}"], "voc21 needs data prepared"),
        (["shapes", "--data", "{data}", "--predictions", "{empty}"], "2 have no prediction"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, shapes_data, args, message, monkeypatch):
    monkeypatch.delenv("SEGDIFF_DATA", raising=False)
    predictions = write_predictions(tmp_path / "pred", PRED)
    (tmp_path / "empty").mkdir()
    paths = {"data": shapes_data, "pred": predictions, "tmp": tmp_path, "empty": tmp_path / "empty"}
    result = run_eval(*(arg.format(**paths) for arg in args), "-o", tmp_path / "out")
    assert_clean_error(result, message)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_model_path_with_a_fake_predictor(tmp_path, shapes_data, monkeypatch):
    """The --model code path (predictor adapter, sharding, outputs) without a real model."""
    seen = {}

    def fake_loader(model, device, **settings):
        seen.update(model=model, device=device, settings=settings)
        order = ["a", "b"]  # one process scores the sorted images in turn

        def predict(image, classes):
            assert classes == list(SHAPES) and image.mode == "RGB"
            return PRED[order.pop(0)].astype(np.uint8)

        return predict, ["a note for the user"]

    monkeypatch.setattr("segdiff.cli.eval.load_model_predictor", fake_loader)
    out = tmp_path / "out"
    result = run_eval(
        "shapes", "--data", shapes_data, "--model", "some/model", "-o", out, "--seed", "3"
    )
    assert result.exit_code == 0, result.output
    assert "a note for the user" in result.output
    assert seen["model"] == "some/model" and seen["device"] == "cpu"
    assert seen["settings"]["seed"] == 3 and seen["settings"]["batch_size"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert_expected_metrics(metrics)
    assert metrics["settings"]["model"] == "some/model" and metrics["settings"]["seed"] == 3


def test_bundled_model_is_the_default(tmp_path, shapes_data, monkeypatch):
    seen = []

    def fake_loader(model, device, **settings):
        seen.append(model)
        return (lambda image, classes: np.zeros((2, 4), np.uint8)), []

    monkeypatch.setattr("segdiff.cli.eval.load_model_predictor", fake_loader)
    monkeypatch.setattr("segdiff.cli.eval.default_model_path", lambda: Path("/bundled/tiny"))
    result = run_eval("shapes", "--data", shapes_data, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert seen == [None]  # the loader picks the bundled model
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["model"] == "/bundled/tiny"


def test_no_model_and_no_bundled_model_exits_2(tmp_path, shapes_data, monkeypatch):
    monkeypatch.setattr("segdiff.model.loading.default_model_path", lambda: None)
    result = run_eval("shapes", "--data", shapes_data, "-o", tmp_path / "out")
    assert_clean_error(result, "no --model given and this install has no bundled model")


def test_model_end_to_end_with_the_tiny_model(tmp_path, shapes_data, request):
    model_dir = request.getfixturevalue("tiny_model_dir")
    out = tmp_path / "out"
    args = ["--ensemble-size", "1", "--denoise-steps", "1", "--seed", "0", "--processing-res", "32"]
    result = run_eval("shapes", "--data", shapes_data, "--model", model_dir, "-o", out, *args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and 0.0 <= metrics["mIoU"] <= 100.0
    assert metrics["settings"]["ensemble_size"] == 1
    assert metrics["settings"]["model"] == str(model_dir)


def test_two_processes_match_one(tmp_path, shapes_data, write_prepared):
    """`accelerate launch --multi_gpu` shards over gloo when there is no GPU (CPU forced)."""
    labels = {f"im{i}": np.arange(15).reshape(3, 5) % 7 for i in range(5)}
    labels["im3"][0, 0] = N
    data = write_prepared(tmp_path / "five", "shapes", SHAPES, labels)
    predictions = write_predictions(tmp_path / "pred5", {k: v[::-1] for k, v in labels.items()})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    eval_args = ["eval", "shapes", "--data", str(data), "--predictions", str(predictions)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(port), "-m", "segdiff"]
    subprocess.run(
        [*launch, *eval_args, "-o", str(tmp_path / "two")],
        env=env, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    result = run_eval(*eval_args[1:], "-o", tmp_path / "one")
    assert result.exit_code == 0, result.output

    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one["settings"].pop("num_processes"), two["settings"].pop("num_processes")) == (1, 2)
    assert one == two
    assert one["images"] == 5
    np.testing.assert_array_equal(
        np.load(tmp_path / "one" / "confusion.npy"), np.load(tmp_path / "two" / "confusion.npy")
    )
    assert len(list((tmp_path / "two" / "samples").iterdir())) == 5


def write_infer_outputs(folder: Path, predictions: dict[str, np.ndarray], classes: list[str]):
    """Predictions as `segdiff infer` writes them: <id>_labels.png holds indices into the
    class list that <id>.json records (here ``classes``, a reordering of the benchmark's)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {name: k for k, name in enumerate(classes)}
    for image_id, labels in predictions.items():
        local = np.vectorize(lambda v: N if v == N else index[SHAPES[v]])(labels)
        Image.fromarray(local.astype(np.uint8)).save(folder / f"{image_id}_labels.png")
        (folder / f"{image_id}.json").write_text(json.dumps({"classes": classes}))
    return folder


def test_infer_outputs_are_scored_by_class_name(tmp_path, shapes_data):
    reordered = list(reversed(SHAPES))
    predictions = write_infer_outputs(tmp_path / "pred", PRED, reordered)
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert result.exit_code == 0, result.output
    assert_expected_metrics(json.loads((out / "metrics.json").read_text()))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda d: (d / "a.json").write_text('{"classes": ["circle", "dog"]}'), "['dog']"),
        (lambda d: (d / "a.json").unlink(), "a_labels.png has no a.json beside it"),
        (lambda d: (d / "a.json").write_text("[]"), "cannot read the class list"),
        (lambda d: write_predictions(d, {"a": PRED["a"]}), "both a.png and a_labels.png"),
    ],
    ids=["class-not-in-benchmark", "no-json", "json-list", "both-names"],
)
def test_infer_outputs_that_cannot_be_mapped_exit_2(tmp_path, shapes_data, spoil, message):
    predictions = write_infer_outputs(tmp_path / "pred", PRED, list(SHAPES))
    spoil(predictions)
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert_clean_error(result, "1 of 2 images could not be scored", message)


def test_segdiff_infer_then_eval(tmp_path, shapes_root, request):
    """The README's chain: infer a prepared split with the benchmark's classes, then score."""
    model = request.getfixturevalue("tiny_model_dir")
    predictions = tmp_path / "p"
    infer = runner.invoke(
        app,
        ["infer", str(shapes_root / "val" / "images"), "-c", "shapes", "-o", str(predictions),
         "--model", str(model), "--ensemble-size", "1", "--denoise-steps", "1", "--seed", "0"],
    )  # fmt: skip
    assert infer.exit_code == 0, infer.output
    result = run_eval(
        "shapes", "--data", shapes_root, "--predictions", predictions, "-o", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["problems"]["missing_predictions"] == 0


def test_missing_predictions_name_the_files_looked_for(tmp_path, shapes_data):
    (tmp_path / "empty").mkdir()
    result = run_eval("shapes", "--data", shapes_data, "--predictions", tmp_path / "empty")
    assert_clean_error(
        result, "2 have no prediction", f"looked for {tmp_path / 'empty' / '<id>.png'}",
        "<id>_labels.png with <id>.json as 'segdiff infer' writes them",
    )  # fmt: skip


def _spoil_meta(data: Path, content: bytes) -> None:
    (data / "meta.json").write_bytes(content)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda d: _spoil_meta(d, b"[]"), "meta.json must hold a JSON object, got a list"),
        (
            lambda d: _spoil_meta(d, b'{"format_version": 1}'),
            "needs a 'vocabulary': a list of distinct class names, got None",
        ),
        (lambda d: _spoil_meta(d, '{"x": "é"}'.encode("latin-1")), "is not readable UTF-8 JSON"),
        (lambda d: (d / "val" / "text.json").write_text("[]"), "text.json must hold a JSON object"),
        (
            lambda d: (d / "val" / "text.json").write_text('{"a.png": "circle"}'),
            "a.png must map to a list of class names",
        ),
    ],
    ids=["meta-list", "no-vocabulary", "meta-latin-1", "text-list", "text-value"],
)
def test_a_broken_prepared_dataset_exits_2(tmp_path, shapes_data, spoil, message):
    spoil(shapes_data)
    predictions = write_predictions(tmp_path / "pred", PRED)
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions)
    assert_clean_error(result, message)


def test_masks_off_their_levels_are_refused(tmp_path, shapes_data):
    mask_path = shapes_data / "val" / "masks" / "a.png"
    mask = np.asarray(Image.open(mask_path)).astype(np.int64)
    Image.fromarray(((mask + 40) % 256).astype(np.uint8)).save(mask_path)  # shifted by 40
    predictions = write_predictions(tmp_path / "pred", PRED)
    out = tmp_path / "out"
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert_clean_error(
        result, "1 of 2 images could not be scored", "8 of 8 pixels (100.0%) have gray values off "
        "the levels of its 2-class list (0, 128, 255)",
    )  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["problems"]["failed_images"] == 1


def test_out_of_memory_in_eval_says_what_to_lower(tmp_path, shapes_data, monkeypatch):
    def fake_loader(model, device, **settings):
        def predict(image, classes):
            raise MemoryError("Unable to allocate 10.0 TiB for an array")

        return predict, []

    monkeypatch.setattr("segdiff.cli.eval.load_model_predictor", fake_loader)
    result = run_eval("shapes", "--data", shapes_data, "-o", tmp_path / "out")
    assert_clean_error(result, "out of memory (Unable to allocate", "--processing-res")


def test_ctrl_c_in_eval_exits_130_without_a_traceback(tmp_path, shapes_data, monkeypatch):
    def fake_loader(model, device, **settings):
        def predict(image, classes):
            raise KeyboardInterrupt

        return predict, []

    monkeypatch.setattr("segdiff.cli.eval.load_model_predictor", fake_loader)
    result = run_eval("shapes", "--data", shapes_data, "-o", tmp_path / "out")
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert "Interrupted." in said and "run the same command again" in said
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ade15"], "did you mean ade150?"),
        (["shapes", "--seed", "-1"], "--seed must be between 0 and"),
        (["shapes", "-o", "{file}"], "is a file; give a folder"),
    ],
)
def test_more_bad_arguments_exit_2(tmp_path, shapes_data, args, message):
    (tmp_path / "file").write_text("x")
    predictions = write_predictions(tmp_path / "pred", PRED)
    args = [arg.format(file=tmp_path / "file") for arg in args]
    result = run_eval(*args, "--data", shapes_data, "--predictions", predictions)
    assert_clean_error(result, message)


def test_a_rerun_into_the_same_output_removes_stale_temporaries(
    tmp_path, shapes_data, stale_temporary
):
    predictions = write_predictions(tmp_path / "pred", PRED)
    out = tmp_path / "out"
    leftovers = [stale_temporary(out, "metrics.json"), stale_temporary(out / "samples", "00_a.png")]
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in leftovers)
    assert not [p for p in out.rglob(".*")]


def test_disk_full_while_writing_the_report_exits_2(tmp_path, shapes_data, full_disk):
    import errno

    predictions = write_predictions(tmp_path / "pred", PRED)
    out = tmp_path / "out"
    full_disk("confusion", errno.EDQUOT)
    result = run_eval("shapes", "--data", shapes_data, "--predictions", predictions, "-o", out)
    assert_clean_error(result, f"disk full at {out / 'confusion.png'}")
    assert json.loads((out / "metrics.json").read_text())["images"] == 2  # kept
    assert not [p for p in out.rglob(".*")]
