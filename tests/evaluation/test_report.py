"""Output files and the terminal summary of an evaluation."""

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from segdiff.evaluation.evaluate import EvalResult
from segdiff.evaluation.report import print_summary, write_outputs

CLASSES = ("background", "chest of drawers, chest", "ring")


def result_with_problems() -> EvalResult:
    confusion = np.array([[3, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    panel = np.zeros((4, 6, 3), dtype=np.uint8)
    return EvalResult(
        "shapes",
        "val",
        CLASSES,
        confusion=confusion,
        images=4,
        scored=2,
        missing=["c.png"],
        failures=[("d.png", "prediction has shape (2, 2), ground truth (3, 3)")],
        out_of_range={"b.png": 7},
        samples=[("a.png", panel), ("b.png", panel)],
    )


def test_write_outputs(tmp_path):
    out = write_outputs(result_with_problems(), tmp_path / "run", {"predictions": "/p"})
    metrics = json.loads((out / "metrics.json").read_text())
    # gt totals 4, 2, 0; TP 3, 1; pred totals 4, 1.
    assert metrics["mIoU"] == pytest.approx((60 + 50) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(400 / 6)
    assert metrics["mean_accuracy"] == pytest.approx((75 + 50) / 2)
    assert metrics["fwIoU"] == pytest.approx(4 / 6 * 60 + 2 / 6 * 50)
    assert metrics["per_class"] == {
        "background": pytest.approx(60.0),
        "chest of drawers, chest": pytest.approx(50.0),
        "ring": None,
    }
    assert (metrics["benchmark"], metrics["split"], metrics["images"]) == ("shapes", "val", 2)
    assert metrics["settings"] == {"predictions": "/p", "num_processes": 1}
    problems = metrics["problems"]
    assert problems["missing_predictions"] == 1 and problems["missing_examples"] == ["c.png"]
    assert problems["failed_images"] == 1 and problems["failed_examples"][0]["image"] == "d.png"
    assert problems["out_of_range_pixels"] == 7 and problems["out_of_range_images"] == 1

    rows = list(csv.DictReader(io.StringIO((out / "per_class.csv").read_text())))
    assert [r["class"] for r in rows] == list(CLASSES)
    assert rows[1]["iou"] == "50.0000" and rows[1]["gt_pixels"] == "2"
    assert rows[2]["iou"] == "" and rows[2]["pred_pixels"] == "0"
    np.testing.assert_array_equal(np.load(out / "confusion.npy"), result_with_problems().confusion)
    assert (out / "confusion.png").is_file()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["00_a.png", "01_b.png"]
    assert not [p for p in out.rglob(".*")]  # no temp files left behind


def test_print_summary_shows_metrics_classes_and_problems():
    buffer = io.StringIO()
    print_summary(result_with_problems(), Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "55.00" in text  # mIoU
    assert "chest of drawers, chest" in text and "ring" in text
    assert "1 of 4 images have no prediction" in text
    assert "1 images could not be scored: d.png: prediction has shape" in text
    assert "7 predicted pixels in 1 images hold no class id" in text
