import json
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image
from transformers import CLIPTokenizer

from segdiff import depth_coding
from segdiff.errors import SegDiffInputError
from segdiff.export import ExportVerificationError, export_onnx
from segdiff.export import onnx as onnx_export

GRAPHS = ("text_encoder", "cam", "unet", "vae_encoder", "vae_decoder")


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "export"
    steps = []
    report = export_onnx(tiny_model_dir, out, on_step=steps.append)
    assert report["passed"] and any("unet" in step for step in steps)
    return out


def test_layout_external_data_and_description(onnx_dir):
    for name in GRAPHS:
        assert (onnx_dir / f"{name}.onnx").is_file()
    assert (onnx_dir / "unet.onnx.data").stat().st_size > (onnx_dir / "unet.onnx").stat().st_size
    description = json.loads((onnx_dir / "segdiff_onnx.json").read_text())
    unet_inputs = {spec["name"]: spec for spec in description["graphs"]["unet"]["inputs"]}
    assert unet_inputs["sample"]["shape"] == ["batch", 8, "height", "width"]
    assert unet_inputs["encoder_attention_mask"] == {
        "name": "encoder_attention_mask",
        "dtype": "bool",
        "shape": ["batch", "tokens"],  # the classes, then the CAM's none token
    }
    assert description["pipeline"]["none_token"] is True
    assert description["pipeline"]["prompt_template"] == "a photo of a {}."
    assert CLIPTokenizer.from_pretrained(onnx_dir / "tokenizer").model_max_length == 77
    assert "Usage (ONNX, fp32)" in (onnx_dir / "README.md").read_text()


def test_verification_ran_two_shapes_per_graph_within_tolerance(onnx_dir):
    report = json.loads((onnx_dir / "verification.json").read_text())
    assert report["passed"] and set(report["graphs"]) == set(GRAPHS)
    for check in report["graphs"].values():
        first, second = check["runs"]
        assert first["inputs"] != second["inputs"]
        assert check["max_abs_diff"] <= 1e-3


def _onnx_labels(folder, pipe, image, classes):
    """Segment with nothing but the exported files (one member, one DDIM step)."""
    sessions = {name: onnxruntime.InferenceSession(str(folder / f"{name}.onnx")) for name in GRAPHS}

    def run(name, **feed):
        return sessions[name].run(None, feed)[0]

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    template = json.loads((folder / "segdiff_onnx.json").read_text())["pipeline"]
    prompts = [template["prompt_template"].format(name) for name in classes]
    ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="np").input_ids
    mask = np.ones((1, len(classes)), bool)
    levels = (depth_coding.gray_levels(len(classes)) / 255.0).astype(np.float32)[None]
    embeddings = run("text_encoder", input_ids=ids.astype(np.int64))[None]
    context = run("cam", class_embeddings=embeddings, levels=levels, attention_mask=mask)
    if template["none_token"]:  # the CAM appended its none token: attend to it too
        mask = np.concatenate([mask, np.ones((1, 1), bool)], axis=1)
    pixels, (height, width) = pipe._preprocess(image, 32)
    image_latent = run("vae_encoder", image=pixels.numpy())
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(1)
    latents = torch.randn(
        (1, 4, *image_latent.shape[-2:]), generator=torch.Generator().manual_seed(0)
    )
    for t in scheduler.timesteps:
        sample = np.concatenate([image_latent, latents.numpy()], axis=1)
        timestep = np.array([t], dtype=np.int64)
        prediction = run(
            "unet",
            sample=sample,
            timestep=timestep,
            encoder_hidden_states=context,
            encoder_attention_mask=mask,
        )
        latents = scheduler.step(torch.from_numpy(prediction), t, latents).prev_sample
    decoded = run("vae_decoder", latent=latents.numpy())
    gray = np.clip((decoded.mean(axis=1)[0] + 1.0) * 127.5, 0, 255)[:height, :width]
    return depth_coding.decode(gray, len(classes))


def test_the_graphs_segment_like_the_pytorch_pipeline(onnx_dir, tiny_pipeline):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 36, 3), np.uint8))
    classes = ["sky", "tree", "road", "car"]
    expected = tiny_pipeline(
        image,
        classes,
        num_inference_steps=1,
        ensemble_size=1,
        match_input_resolution=False,
        generator=torch.Generator().manual_seed(0),
    ).labels[0]
    actual = _onnx_labels(onnx_dir, tiny_pipeline, image, classes)
    assert len(np.unique(expected)) > 1
    assert np.array_equal(actual, expected)


def _only_cam(monkeypatch):
    """Export just the CAM graph: the quick way to reach the end of an export."""
    original = onnx_export.build_graphs
    monkeypatch.setattr(
        onnx_export, "build_graphs", lambda pipe: [g for g in original(pipe) if g.name == "cam"]
    )


def test_a_graph_off_by_more_than_the_tolerance_fails_the_export(
    tiny_model_dir, tmp_path, monkeypatch
):
    _only_cam(monkeypatch)
    monkeypatch.setitem(onnx_export.TOLERANCE, "fp32", -1.0)
    with pytest.raises(ExportVerificationError, match="cam") as err:
        export_onnx(tiny_model_dir, tmp_path / "out")
    assert not isinstance(err.value, SegDiffInputError)  # the export's fault, not the input's
    assert list(tmp_path.iterdir()) == []


def test_fp16_graphs(tiny_model_dir, tmp_path, monkeypatch):
    _only_cam(monkeypatch)
    report = export_onnx(tiny_model_dir, tmp_path / "out", dtype="fp16")
    assert report["passed"] and report["tolerance"] == onnx_export.TOLERANCE["fp16"]
    description = json.loads((tmp_path / "out" / "segdiff_onnx.json").read_text())
    types = {spec["name"]: spec["dtype"] for spec in description["graphs"]["cam"]["inputs"]}
    assert types == {"class_embeddings": "float16", "levels": "float32", "attention_mask": "bool"}


def test_bf16_and_a_missing_onnxruntime_are_clear_errors(tiny_model_dir, tmp_path, monkeypatch):
    with pytest.raises(SegDiffInputError, match="not bf16"):
        export_onnx(tiny_model_dir, tmp_path / "out", dtype="bf16")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SegDiffInputError, match=r"pip install segdiff\[onnx\]"):
        export_onnx(tiny_model_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_every_axis_is_a_number_or_a_named_dimension(onnx_dir):
    """The VAE latent's channel axis used to come out as the made-up name 'Mullatent_dim_1'."""
    description = json.loads((onnx_dir / "segdiff_onnx.json").read_text())
    named = {"batch", "classes", "tokens", "height", "width", "latent_height", "latent_width",
             "timestep_batch"}  # fmt: skip
    for graph in description["graphs"].values():
        for spec in graph["inputs"] + graph["outputs"]:
            for dim in spec["shape"]:
                assert isinstance(dim, int) or dim in named, (spec["name"], dim)
    latent = description["graphs"]["vae_encoder"]["outputs"][0]
    assert latent["shape"] == ["batch", 4, "latent_height", "latent_width"]


def test_sides_off_the_latent_multiple_are_refused_by_the_graphs(onnx_dir, tiny_pipeline):
    multiple = json.loads((onnx_dir / "segdiff_onnx.json").read_text())["pipeline"][
        "latent_multiple"
    ]
    encoder = onnxruntime.InferenceSession(str(onnx_dir / "vae_encoder.onnx"))
    good = np.zeros((1, 3, multiple, 2 * multiple), np.float32)
    assert encoder.run(None, {"image": good})[0].shape[1] == 4
    for height, width in ((multiple + 1, multiple), (multiple, 3 * multiple // 2)):
        bad = np.zeros((1, 3, height, width), np.float32)
        with pytest.raises(Exception, match=f"image_sides_must_be_multiples_of_{multiple}"):
            encoder.run(None, {"image": bad})
    unet = onnxruntime.InferenceSession(str(onnx_dir / "unet.onnx"))
    unit = multiple // tiny_pipeline.vae_scale_factor
    feed = {
        "sample": np.zeros((1, 8, unit + 1, unit), np.float32),
        "timestep": np.array([1], np.int64),
        "encoder_hidden_states": np.zeros(
            (1, 2, tiny_pipeline.unet.config.cross_attention_dim), np.float32
        ),  # fmt: skip
        "encoder_attention_mask": np.ones((1, 2), bool),
    }
    with pytest.raises(Exception, match=f"latent_sides_must_be_multiples_of_{unit}"):
        unet.run(None, feed)


def test_infer_on_an_onnx_folder_says_it_needs_the_diffusers_export(onnx_dir, tmp_path):
    from typer.testing import CliRunner

    from segdiff.cli import app

    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    result = CliRunner().invoke(
        app, ["infer", str(image), "-c", "a,b", "--model", str(onnx_dir), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "is an ONNX export" in said and "--format diffusers" in said
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
