import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segdiff.export import export_diffusers
from segdiff.model.pipeline import SegDiffPipeline

CLASSES = ["sky", "tree", "road"]


def _labels(pipe):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8))
    generator = torch.Generator().manual_seed(0)
    result = pipe(image, CLASSES, num_inference_steps=1, ensemble_size=1, generator=generator)
    return result.labels[0]


@pytest.fixture(scope="module")
def source_labels(tiny_pipeline):
    return _labels(tiny_pipeline)


@pytest.fixture(scope="module")
def fp16_export(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "fp16"
    assert export_diffusers(tiny_model_dir, out, dtype="fp16") == ["fp32", "fp16"]
    return out


def test_fp32_weights_and_fp16_variant_side_by_side(fp16_export):
    unet = sorted(path.name for path in (fp16_export / "unet").iterdir())
    assert unet == [
        "config.json",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.safetensors",
    ]
    assert (fp16_export / "text_encoder" / "model.fp16.safetensors").is_file()
    assert '"dtype": "float32"' in (fp16_export / "text_encoder" / "config.json").read_text()
    assert not list(fp16_export.rglob("*.bin")) and not list(fp16_export.rglob("*.pt"))
    card = (fp16_export / "README.md").read_text()
    assert "license: apache-2.0" in card and 'variant="fp16"' in card
    assert "No training recipe came with this model" in card


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_the_export_segments_like_its_source(fp16_export, tiny_pipeline, source_labels, variant):
    exported = SegDiffPipeline.from_pretrained(fp16_export, variant=variant)
    exported.set_progress_bar_config(disable=True)
    if variant:
        # the fp16 file is what was read: its weights, rounded to half, in the fp32 model
        weight, source = exported.unet.conv_in.weight, tiny_pipeline.unet.conv_in.weight
        assert weight.dtype == torch.float32
        assert torch.equal(weight, source.half().float()) and not torch.equal(weight, source)
    assert np.array_equal(_labels(exported), source_labels)


def test_a_checkpoint_exports_without_training_state_and_with_its_records(training_run, tmp_path):
    out = tmp_path / "ckpt"
    export_diffusers(training_run, out, dtype="bf16")
    assert not list(out.rglob("training_state")) and not (out / "checkpoint.json").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["name"] == "tiny"
    assert (out / "metrics.json").read_bytes() == (training_run / "metrics.json").read_bytes()
    card = (out / "README.md").read_text()
    assert "step 1000" in card and "background, circle, square" in card
    assert "| mIoU | 61.25 |" in card
    exported = SegDiffPipeline.from_pretrained(out, variant="bf16", dtype=torch.bfloat16)
    assert exported.unet.dtype == torch.bfloat16
    expected = SegDiffPipeline.from_pretrained(out).unet.conv_out.bias
    assert torch.equal(exported.unet.conv_out.bias, expected.to(torch.bfloat16))


def test_an_export_holds_no_path_of_the_exporting_machine(training_run, prepared_meta, tmp_path):
    """Not in the card, in any component's `_name_or_path`, nor in the recipe's data.root."""
    out = tmp_path / "out"
    export_diffusers(training_run, out)
    machine = [str(training_run.parent), str(tmp_path), str(training_run.resolve().parent)]
    for path in out.rglob("*"):
        if path.suffix in (".json", ".md", ".yaml", ".py"):
            text = path.read_text()
            assert not any(folder in text for folder in machine), path
            assert "_name_or_path" not in text, path
    assert yaml.safe_load((out / "recipe.yaml").read_text())["data"]["root"] == prepared_meta.name


def test_the_bundled_model_card_tells_how_it_was_made(tmp_path):
    from segdiff.model import default_model_path

    out = tmp_path / "tiny"
    export_diffusers(default_model_path(), out)
    card = " ".join((out / "README.md").read_text().split())
    assert "Stable Diffusion" not in card.split("## License")[0]
    assert "trained from scratch (no pretrained weights)" in card
    assert "Training data: shapes (benchmark shapes), split train, 2000 images" in card
    assert "segdiff prepare shapes` (seed 0, 64 px images)" in card
    miou = json.loads((default_model_path() / "metrics.json").read_text())["mIoU"]
    assert "Trained on 7 classes" in card and f"| mIoU | {miou:.2f} |" in card
    assert "not recorded" not in card and "not listed" not in card
    assert "model folder `tiny-shapes`" in card and "base_model" not in card


RECEIVER = """
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

folder = sys.argv[1]
unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", use_safetensors=True)
vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", use_safetensors=True)
text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
generator = torch.Generator().manual_seed(0)
sample = torch.randn(1, unet.config.in_channels, 8, 8, generator=generator)
context = torch.randn(1, 3, unet.config.cross_attention_dim, generator=generator)
with torch.no_grad():
    prediction = unet(sample, torch.tensor([999]), context).sample
torch.save(prediction, sys.argv[2])
assert "segdiff" not in sys.modules
print("LOADED:", vae.config.latent_channels, text_encoder.config.hidden_size)
"""


def test_plain_diffusers_and_transformers_load_the_networks_of_an_export(
    fp16_export, tiny_pipeline, tmp_path
):
    """The receiving side: a script that imports diffusers and transformers, never segdiff,
    loads every network of the export and gets the source UNet's prediction; the folder
    ships no code."""
    import os
    import subprocess
    import sys

    assert not list(fp16_export.rglob("*.py"))
    assert json.loads((fp16_export / "model_index.json").read_text())["_class_name"] == (
        "SegDiffPipeline"
    )
    script = tmp_path / "receiver.py"
    script.write_text(RECEIVER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, str(script), str(fp16_export), str(tmp_path / "prediction.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED:" in done.stdout
    generator = torch.Generator().manual_seed(0)
    unet = tiny_pipeline.unet
    sample = torch.randn(1, unet.config.in_channels, 8, 8, generator=generator)
    context = torch.randn(1, 3, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        expected = unet(sample, torch.tensor([999]), context).sample
    received = torch.load(tmp_path / "prediction.pt", weights_only=True)
    torch.testing.assert_close(received, expected)
