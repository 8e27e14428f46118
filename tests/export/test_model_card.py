import json

import yaml

from segdiff.export.model_card import TrainingRecord, model_card
from segdiff.export.source import ModelSource


def _source(tmp_path, recipe=None, metrics=None):
    paths = {}
    for name, data, dump in (
        ("recipe.yaml", recipe, yaml.safe_dump),
        ("metrics.json", metrics, json.dumps),
    ):
        if data is not None:
            paths[name] = tmp_path / name
            paths[name].write_text(dump(data))
    return ModelSource(
        name="m",
        weights=tmp_path,
        recipe=paths.get("recipe.yaml"),
        metrics=paths.get("metrics.json"),
    )


def _front_matter(card):
    return yaml.safe_load(card.split("---")[1])


def test_card_of_a_fine_tuned_stable_diffusion_run(tiny_pipeline, tmp_path, prepared_meta):
    recipe = {
        "model": {"kind": "stable-diffusion", "pretrained": "stabilityai/stable-diffusion-2"},
        "data": {"root": str(prepared_meta), "resolution": 512},
        "train": {"steps": 20000, "ema": {"enabled": True}},
    }
    metrics = {"mIoU": 45.678, "pixel_accuracy": 80.0, "per_class": {"circle": 12.5, "x": None}}
    source = _source(tmp_path, recipe, metrics)
    card = model_card(tiny_pipeline, source, "diffusers", ["fp32"], TrainingRecord.read(source))
    meta = _front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "image-segmentation"
    assert meta["base_model"] == "stabilityai/stable-diffusion-2" and "shapes" in meta["tags"]
    assert "CreativeML Open RAIL++-M" in card
    assert "Trained on 3 classes" in card and "background, circle, square" in card
    assert "| mIoU | 45.68 |" in card and "| circle | 12.50 |" in card
    assert "| x | no ground truth |" in card  # a class absent from the validation images
    assert "- EMA weights: True" in card and "- Crop resolution: 512" in card
    assert "segdiff infer photo.jpg" in card and "SegDiffPipeline.from_pretrained" in card
    assert "variant=" not in card  # fp32 only


def test_unknown_facts_are_said_to_be_unknown(tiny_pipeline, tmp_path):
    source = _source(tmp_path, recipe={"data": {"root": str(tmp_path / "gone")}})
    card = model_card(tiny_pipeline, source, "onnx", ["fp16"], TrainingRecord.read(source))
    assert _front_matter(card)["library_name"] == "onnx"
    assert "classes it was trained on are not listed" in card
    assert "No evaluation metrics were recorded" in card
    assert "RAIL" not in card and "base_model" not in card
    assert "Usage (ONNX, fp16)" in card
