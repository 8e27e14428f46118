"""Does segdiff learn? The bundled model on its example, and a full prepare/train/eval run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdiff.evaluation.metrics import compute_metrics, confusion_matrix, prediction_rows
from segdiff.model import default_model_path
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.vocabularies import SHAPES_CLASSES

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "segdiff" / "assets" / "examples"
TIME_LIMIT_S = 15 * 60
MIN_MIOU = 50.0


LEARNING_OPT_IN = "SEGDIFF_LEARNING_TEST"


def test_bundled_model_segments_its_example():
    """The README's main command works: the bundled model loads and segments its example.

    The shipped model is an undertrained demo (about 16 mIoU; the README's "Recipes" says
    why), so this checks a complete, well-formed result and that it finds more than one class,
    not its accuracy.
    """
    model = default_model_path()
    assert model is not None, "segdiff/assets/tiny-shapes is missing"
    pipe = SegDiffPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(EXAMPLES / "shapes.png").convert("RGB")
    truth = np.asarray(Image.open(EXAMPLES / "shapes_labels.png")).astype(np.uint16)
    output = pipe(image, list(SHAPES_CLASSES), generator=torch.manual_seed(0))
    labels = output.labels[0]
    assert labels.shape == truth.shape
    assert set(np.unique(labels)) <= set(range(len(SHAPES_CLASSES))) | {255}
    rows, _ = prediction_rows(labels, len(SHAPES_CLASSES))
    metrics = compute_metrics(confusion_matrix(rows, truth, len(SHAPES_CLASSES)))
    assert len(np.unique(labels)) > 1 and metrics.pixel_accuracy > 50.0


def run(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "segdiff", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"segdiff {' '.join(args)} failed:\n{done.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get(LEARNING_OPT_IN) != "1",
    reason="the tiny-shapes recipe does not reach mIoU 50 (16 after its 2,000 steps, 11 min; "
    "issue 5, and the README's 'Recipes' section, say why), so CI does not spend 15 minutes on "
    f"it; set {LEARNING_OPT_IN}=1 to run",
)
def test_tiny_recipe_learns_shapes(tmp_path):
    """prepare + train + eval on the CPU: mIoU >= 50 on held-out shapes (all-background
    scores ~10), within 15 minutes on 2 cores."""
    data, run_dir, scores = tmp_path / "shapes", tmp_path / "run", tmp_path / "eval"
    start = time.monotonic()
    run("prepare", "shapes", "--out", str(data))
    run("train", str(REPO / "recipes" / "tiny-shapes.yaml"), f"data.root={data}",
        "--output", str(run_dir))  # fmt: skip
    run("eval", "shapes", "--data", str(data), "--model", str(run_dir / "model"),
        "--output", str(scores), "--limit", "100")  # fmt: skip
    elapsed = time.monotonic() - start
    metrics = json.loads((scores / "metrics.json").read_text())
    print(f"learning test: mIoU {metrics['mIoU']:.1f} in {elapsed / 60:.1f} min")
    assert metrics["mIoU"] >= MIN_MIOU
    assert elapsed <= TIME_LIMIT_S
