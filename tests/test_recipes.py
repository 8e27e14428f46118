from pathlib import Path

import pytest
import yaml

from segdiff.errors import SegDiffInputError
from segdiff.model.pipeline import DEFAULTS
from segdiff.recipes import Recipe, load_recipe, save_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["tiny-shapes", "sd2-cocostuff", "sd2-ade20k"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name
    assert recipe.data.root is None  # always given on the command line


def test_sd2_recipes_are_realistic_gpu_settings():
    coco = load_recipe(RECIPES / "sd2-cocostuff.yaml")
    ade = load_recipe(RECIPES / "sd2-ade20k.yaml")
    for recipe in (coco, ade):
        assert recipe.model.kind == "stable-diffusion"
        assert recipe.model.pretrained == "stabilityai/stable-diffusion-2"
        assert recipe.data.resolution == 768
        assert recipe.train.mixed_precision == "bf16"
        assert recipe.train.gradient_checkpointing == "auto" and recipe.train.ema.enabled
        assert recipe.train.compile is True and recipe.train.channels_last
    # ade20k inherits everything it does not set from the COCO-Stuff recipe
    assert ade.optim == coco.optim
    assert ade.train.steps != coco.train.steps


def test_base_inheritance_merges_nested_keys(tmp_path):
    write(tmp_path / "base.yaml", {"name": "base", "optim": {"lr": 0.1, "warmup_steps": 7}})
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.yaml", {"base": "../base.yaml", "optim": {"lr": 0.2}})
    recipe = load_recipe(child)
    assert recipe.optim.lr == 0.2
    assert recipe.optim.warmup_steps == 7
    assert recipe.name == "child"  # named after the file given, not its base


def test_overrides_are_yaml_scalars(tmp_path):
    recipe = load_recipe(
        RECIPES / "tiny-shapes.yaml",
        {
            "optim.lr": "1e-5",  # YAML 1.1 reads this as text; a float field takes it
            "data.root": str(tmp_path),
            "train.ema.enabled": "true",
            "data.scale": "[1.0, 2.0]",
            "model.tiny.unet.layers_per_block": "2",
        },
    )
    assert recipe.optim.lr == pytest.approx(1e-5)
    assert recipe.data.root == str(tmp_path)
    assert recipe.train.ema.enabled is True
    assert recipe.data.scale == [1.0, 2.0]
    assert recipe.model.tiny["unet"]["layers_per_block"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim.lrr": "1"}, "unknown recipe key(s) optim.lrr"),
        ({"train.steps": "many"}, "train.steps must be a whole number"),
        ({"train.steps": "1.5"}, "train.steps must be a whole number"),
        ({"train.ema.enabled": "1"}, "train.ema.enabled must be true or false"),
        ({"train.mixed_precision": "fp8"}, "must be one of 'no', 'fp16', 'bf16'"),
        ({"optim.lr": "fast"}, "optim.lr must be a number"),
        ({"train.steps": "0"}, "train.steps must be positive"),
        ({"data.resolution": "30"}, "multiple of 8"),
        ({"data.scale": "[2.0, 1.0]"}, "data.scale"),
        ({"optim": "3"}, "optim must be a mapping"),
        ({"model.tiny.clip.x": "1"}, "model.tiny has unknown components"),
        ({"model.prompt_template": "a photo"}, "'{}' slot"),
        ({"optim.lr.x": "1"}, "holds a value, not a section"),
        ({"data.drop_present": "1.0"}, "data.drop_present must be in [0, 1)"),
        ({"data.min_negatives": "9"}, "data.min_negatives must not exceed"),
    ],
)
def test_bad_values_are_clear_input_errors(overrides, message):
    with pytest.raises(SegDiffInputError) as err:
        load_recipe(RECIPES / "tiny-shapes.yaml", overrides)
    assert message in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(SegDiffInputError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1,", encoding="utf-8")
    with pytest.raises(SegDiffInputError, match="not valid YAML"):
        load_recipe(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n", encoding="utf-8")
    with pytest.raises(SegDiffInputError, match="mapping"):
        load_recipe(tmp_path / "list.yaml")
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(SegDiffInputError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_saved_recipe_loads_back_identical(tmp_path):
    recipe = load_recipe(RECIPES / "sd2-ade20k.yaml", {"data.root": "/data/ade"})
    save_recipe(recipe, tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again == recipe
    assert isinstance(again, Recipe)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("train:\n  ema: 3\n", "recipe key train.ema must be a mapping, got 3"),
        ("optim:\n  lr: [1]\n", "recipe key optim.lr must be a number, got [1]"),
        ("data:\n  scale: [1.0, x]\n", "recipe key data.scale[1] must be a number, got 'x'"),
        ("bogus: 1\n", "unknown recipe key(s) bogus; the recipe takes: name, seed, model"),
        ("data:\n  hflip: 'yes'\n", "recipe key data.hflip must be true or false, got 'yes'"),
    ],
)
def test_errors_in_files_name_the_full_key(tmp_path, content, message):
    (tmp_path / "r.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(SegDiffInputError) as err:
        load_recipe(tmp_path / "r.yaml")
    assert message in str(err.value)


def test_empty_sections_and_numbers_as_yaml_writes_them(tmp_path):
    (tmp_path / "r.yaml").write_text("train:\noptim:\n  lr: 1e-4\n  betas: [1, 0.5]\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.train == Recipe().train
    assert recipe.optim.lr == pytest.approx(1e-4) and recipe.optim.betas == [1.0, 0.5]


def test_model_defaults_are_the_pipeline_defaults():
    assert Recipe().model.pipeline_defaults() == DEFAULTS
    tiny = load_recipe(RECIPES / "tiny-shapes.yaml").model.pipeline_defaults()
    assert (tiny.default_denoising_steps, tiny.max_classes_per_pass) == (1, 7)


def test_yaml_words_for_false_stay_text_for_text_keys():
    recipe = load_recipe(RECIPES / "sd2-cocostuff.yaml", {"train.mixed_precision": "no"})
    assert recipe.train.mixed_precision == "no"
    with pytest.raises(SegDiffInputError, match="train.hflip|data.hflip"):
        load_recipe(RECIPES / "tiny-shapes.yaml", {"data.hflip": "maybe"})
