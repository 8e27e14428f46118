import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from segdiff import run_folder
from segdiff.errors import SegDiffInputError
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.training import checkpoints
from segdiff.training.loop import TrainingDiverged, train
from segdiff.training.objective import Denoiser
from segdiff.training.step import learning_rate_schedule


def trained_weights(folder) -> dict[str, torch.Tensor]:
    return {
        **load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"),
        **load_file(folder / "cam" / "diffusion_pytorch_model.safetensors"),
    }


@pytest.fixture(scope="module")
def basic_run(fast_recipe, tmp_path_factory):
    """One fast run shared by the tests that only read its folder."""
    run = tmp_path_factory.mktemp("basic") / "run"
    train(fast_recipe(), run)
    return run


def test_run_folder_contract(basic_run):
    run, model = basic_run, basic_run / "model"
    assert model == run / "model"
    assert (run / "recipe.yaml").is_file()
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        assert (run / "frozen" / name).is_dir()
    # checkpoints at steps 2 and 4, both kept (limit 2)
    names = [p.name for p in run_folder.list_checkpoints(run)]
    assert names == ["step-00000002", "step-00000004"]
    last = run / "checkpoints" / "step-00000004"
    for part in ("unet", "cam", "model_index.json", "training_state", "checkpoint.json"):
        assert (last / part).exists(), part
    info = json.loads((last / "checkpoint.json").read_text())
    assert info["step"] == 4 and info["data_position"] == 4 and info["samples_seen"] == 16
    assert info["epoch"] == 1  # 16 images, 4 a batch: steps 1-4 are epoch 0, position 4 is 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 100.0 and metrics["images"] == 2
    assert list((run / "logs").glob("events.out.tfevents.*"))
    assert not list(run.rglob(".tmp-*"))
    assert not list(run.rglob("*.bin")) and not list(run.rglob("*.pkl"))

    pipe = SegDiffPipeline.from_pretrained(model)
    assert pipe.config.default_processing_resolution == 32
    assert pipe.vae.config.scaling_factor != 1.0  # set from the pre-trained VAE's latents
    # the final model holds the last checkpoint's weights
    final, ckpt = trained_weights(model), trained_weights(last)
    assert all(torch.equal(final[k], ckpt[k]) for k in final)


def test_checkpoint_pipeline_segments(basic_run):
    pipe = checkpoints.load_checkpoint_pipeline(basic_run / "checkpoints" / "step-00000004")
    assert isinstance(pipe, SegDiffPipeline)
    image = Image.new("RGB", (40, 32), "red")
    output = pipe(image, ["background", "circle"], num_inference_steps=1, ensemble_size=1)
    assert output.labels[0].shape == (32, 40)


def test_ema_accumulation_and_checkpoint_limit(fast_recipe, tmp_path):
    run = tmp_path / "run"
    recipe = fast_recipe(
        **{
            "train.ema.enabled": "true",
            "train.ema.decay": "0.5",
            "train.gradient_accumulation": "2",
            "train.checkpoint_limit": "1",
            "validation.num_images": "0",
        }
    )
    train(recipe, run)
    assert [p.name for p in run_folder.list_checkpoints(run)] == ["step-00000004"]
    info = json.loads((run / "checkpoints" / "step-00000004" / "checkpoint.json").read_text())
    assert info["data_position"] == 8  # 2 micro-batches per step
    assert not (run / "metrics.json").exists()
    state = run / "checkpoints" / "step-00000004" / "training_state"
    optimizer = torch.load(state / "optimizer.pt", weights_only=True)
    assert optimizer["state"]
    assert (state / "rng-0.safetensors").is_file()
    # with EMA, unet/ and cam/ hold the averaged weights and the raw ones are kept apart
    raw = load_file(state / "trainable.safetensors")
    averaged = trained_weights(run / "checkpoints" / "step-00000004")
    key = "conv_in.weight"
    assert not torch.equal(raw[f"unet.{key}"], averaged[key])


LEARNING_FEATURES = {
    "data.cache_variants": "2",
    "train.attention_loss": "1.0",
    "model.none_token": "true",
}
"""The latent cache, the attention loss and the CAM's none token, all on."""


@pytest.mark.parametrize("features", [{}, LEARNING_FEATURES], ids=["plain", "learning-features"])
def test_resumed_run_matches_an_uninterrupted_one(fast_recipe, tmp_path, features):
    settings = {"validation.num_images": "0", **features}
    whole = tmp_path / "whole"
    train(fast_recipe(**settings), whole)

    part = tmp_path / "part"
    # "killed" after the step-2 checkpoint: a run of 2 steps, then resumed to 4
    train(fast_recipe(**{**settings, "train.steps": "2"}), part)
    (part / "model").rename(part / "model-at-2")
    train(fast_recipe(**settings), part, resume=part / "checkpoints" / "step-00000002")
    a, b = trained_weights(whole / "model"), trained_weights(part / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = trained_weights(part / "model-at-2")
    assert not all(torch.equal(a[k], first[k]) for k in a)


def test_nan_loss_stops_with_a_clear_error(fast_recipe, tmp_path, monkeypatch):
    def broken_forward(self, unet_input, timesteps, embeddings):
        weight = self.cam.level_mlp[0].weight
        return unet_input[:, 4:] * weight.sum() * float("nan")

    monkeypatch.setattr(Denoiser, "forward", broken_forward)
    with pytest.raises(TrainingDiverged, match="training diverged. Lower optim.lr"):
        # the broken forward skips the UNet, so there is no attention to supervise
        train(fast_recipe(**{"train.attention_loss": "0"}), tmp_path / "run")
    assert not run_folder.list_checkpoints(tmp_path / "run")


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_every_schedule_warms_up_then_follows_its_shape(fast_recipe, schedule):
    overrides = {"optim.schedule": schedule, "optim.warmup_steps": "4", "train.steps": "12"}
    recipe = fast_recipe(**overrides)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.optim.lr)
    lr_schedule = learning_rate_schedule(optimizer, recipe)
    rates = []
    for _ in range(12):
        rates.append(lr_schedule.get_last_lr()[0] / recipe.optim.lr)
        optimizer.step()
        lr_schedule.step()
    assert rates[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    if schedule == "constant":
        assert rates[4:] == pytest.approx([1.0] * 8)
    else:
        assert all(a > b for a, b in zip(rates[4:], rates[5:], strict=False))


def frozen_vae(run) -> dict[str, torch.Tensor]:
    return load_file(run / "frozen" / "vae" / "diffusion_pytorch_model.safetensors")


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def killed_at(monkeypatch, module, name: str, when) -> None:
    """Make ``module.name`` raise KeyboardInterrupt (Ctrl-C, or a kill) when ``when(*args)``."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        if when(*args):
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.fixture(scope="module")
def uninterrupted_run(fast_recipe, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    train(fast_recipe(**{"vae_pretrain.steps": "10", "validation.num_images": "0"}), run)
    return run


def test_killed_during_vae_pretraining_resumes_at_its_checkpoint(
    fast_recipe, uninterrupted_run, tmp_path, monkeypatch, capsys
):
    """VAE pre-training checkpoints every tenth of its steps; a restarted run resumes there
    and ends with the weights of a run that never stopped."""
    recipe = fast_recipe(**{"vae_pretrain.steps": "10", "validation.num_images": "0"})
    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        killed_at(patched, checkpoints, "write_vae_checkpoint", lambda *a: a[-1] == 7)
        with pytest.raises(KeyboardInterrupt):
            train(recipe, run)
    assert run_folder.latest_vae_checkpoint(run).name == "step-00000006"
    assert run_folder.resolve_run("tiny-shapes", run, None) == (run, None)
    train(recipe, run)
    assert "Resuming VAE pre-training at step 6 of 10" in capsys.readouterr().err
    assert same_weights(frozen_vae(run), frozen_vae(uninterrupted_run))
    assert same_weights(
        trained_weights(run / "model"), trained_weights(uninterrupted_run / "model")
    )
    assert not (run / "vae_pretrain").exists()  # done with once RUN/frozen is written
    assert not [p for p in run.rglob(".*") if p.name != ".journal.jsonl"]


def test_killed_before_the_first_checkpoint_reuses_the_pretrained_vae(
    fast_recipe, uninterrupted_run, tmp_path, monkeypatch, capsys
):
    """Killed once RUN/frozen is written, before VAE pre-training's checkpoints are gone."""
    recipe = fast_recipe(**{"vae_pretrain.steps": "10", "validation.num_images": "0"})
    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        killed_at(patched, run_folder, "delete_vae_checkpoints", lambda *a: True)
        with pytest.raises(KeyboardInterrupt):
            train(recipe, run)
    assert (run / "frozen").is_dir() and (run / "vae_pretrain").is_dir()
    assert not run_folder.list_checkpoints(run)
    train(recipe, run)
    assert "Reusing the frozen components" in capsys.readouterr().err
    assert same_weights(
        trained_weights(run / "model"), trained_weights(uninterrupted_run / "model")
    )
    assert not list(run.rglob(".tmp-*")) and not (run / "vae_pretrain").exists()


def test_a_stopped_run_of_another_recipe_starts_over(fast_recipe, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        killed_at(patched, checkpoints, "write_checkpoint", lambda *a: True)
        with pytest.raises(KeyboardInterrupt):
            train(fast_recipe(**{"validation.num_images": "0"}), run)
    train(fast_recipe(**{"validation.num_images": "0", "vae_pretrain.lr": "1e-4"}), run)
    assert "started with another recipe: starting it over" in " ".join(
        capsys.readouterr().err.split()
    )
    assert "lr: 0.0001" in (run / "recipe.yaml").read_text()


def test_a_pretrained_vae_is_used_frozen_instead_of_pretraining_one(
    basic_run, fast_recipe, tmp_path, capsys
):
    source = basic_run / "model" / "vae"
    recipe = fast_recipe(
        **{"model.vae": str(source), "vae_pretrain.steps": "0", **LEARNING_FEATURES}
    )
    train(recipe, tmp_path / "run")
    assert "VAE pre-train" not in capsys.readouterr().out
    vae = "diffusion_pytorch_model.safetensors"
    expected, got = load_file(source / vae), load_file(tmp_path / "run" / "model" / "vae" / vae)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in got)
    cam = json.loads((tmp_path / "run" / "model" / "cam" / "config.json").read_text())
    assert cam["none_token"] is True


def test_a_pretrained_vae_beside_vae_pretraining_or_missing_is_refused(fast_recipe, tmp_path):
    with pytest.raises(SegDiffInputError, match="vae_pretrain.steps must be 0"):
        fast_recipe(**{"model.vae": "bundled"})
    recipe = fast_recipe(**{"model.vae": str(tmp_path / "no-such-vae"), "vae_pretrain.steps": "0"})
    with pytest.raises(SegDiffInputError, match="not a folder"):
        train(recipe, tmp_path / "run")
