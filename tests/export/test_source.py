import json

import pytest
import torch

from segdiff.errors import SegDiffInputError
from segdiff.export.source import resolve_source


def test_a_run_without_final_model_exports_its_latest_checkpoint(training_run):
    source = resolve_source(training_run)
    assert source.checkpoint_step == 1000
    assert source.weights == training_run.resolve() / "checkpoints" / "step-00001000"
    assert source.recipe == training_run.resolve() / "recipe.yaml"
    assert source.metrics == training_run.resolve() / "metrics.json"  # same step: it describes it
    assert training_run.resolve() / "frozen" in source.read_paths


def test_run_metrics_of_another_step_do_not_describe_a_checkpoint(training_run):
    source = resolve_source(training_run / "checkpoints" / "step-00000500")
    assert source.checkpoint_step == 500
    assert source.recipe is not None and source.metrics is None


def test_a_finished_run_and_its_model_folder_export_the_model(finished_run):
    for given in (finished_run, finished_run / "model"):
        source = resolve_source(given)
        assert source.checkpoint_step is None
        assert source.weights == finished_run.resolve() / "model"
        assert source.recipe.name == "recipe.yaml" and source.metrics.name == "metrics.json"


def test_a_plain_model_folder_has_no_records(tiny_model_dir):
    source = resolve_source(tiny_model_dir)
    assert (source.weights, source.recipe, source.metrics) == (tiny_model_dir, None, None)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "sd2", "run_without_checkpoints"])
def test_things_that_are_not_models_are_refused(case, tmp_path, tiny_sd2_dir):
    paths = {
        "missing": tmp_path / "nothing",
        "file": tmp_path / "file.txt",
        "empty": tmp_path / "empty",
        "sd2": tiny_sd2_dir,
        "run_without_checkpoints": tmp_path / "run",
    }
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run" / "checkpoints" / "step-1").mkdir(parents=True)  # never finished
    (tmp_path / "run" / "recipe.yaml").write_text("name: r\n")
    with pytest.raises(SegDiffInputError) as err:
        resolve_source(paths[case])
    expected = {"sd2": "not a segdiff model", "run_without_checkpoints": "nothing to export"}
    assert expected.get(case, "expected a training run folder") in str(err.value)


def test_a_checkpoint_loads_its_trained_weights_with_the_frozen_ones(training_run, tiny_pipeline):
    pipe = resolve_source(training_run / "checkpoints" / "step-00000500").load()
    shifted = tiny_pipeline.unet.conv_out.bias + 0.5
    assert torch.allclose(pipe.unet.conv_out.bias, shifted)
    assert torch.equal(pipe.vae.decoder.conv_out.weight, tiny_pipeline.vae.decoder.conv_out.weight)
    assert pipe.config.default_processing_resolution == 32


def test_incomplete_checkpoint_is_refused(training_run, tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "step-7"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint.json").write_text(json.dumps({"step": 7}))
    with pytest.raises(SegDiffInputError, match="incomplete"):
        resolve_source(checkpoint)
