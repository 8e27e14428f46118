import numpy as np
import pytest
import torch
from PIL import Image

from segdiff import depth_coding
from segdiff.depth_coding import NONE_LABEL
from segdiff.errors import SegDiffInputError
from segdiff.model.pipeline import SegDiffPipeline, _Run

CLASSES = ["background", "circle", "square"]


def _image(width=40, height=24, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _run(pipe, image, classes=CLASSES, seed=0, **kwargs):
    return pipe(image, classes, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_outputs_have_the_input_size_and_valid_values(tiny_pipeline):
    out = _run(tiny_pipeline, _image(), ensemble_size=3)
    labels, uncertainty, gray = out.labels[0], out.uncertainty[0], out.gray[0]
    assert labels.shape == uncertainty.shape == gray.shape == (24, 40)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, NONE_LABEL}
    assert uncertainty.min() >= 0 and uncertainty.max() <= 1 - 1 / 3 + 1e-6
    assert gray.min() >= 0 and gray.max() <= 255
    fractions = out.class_fractions[0]
    assert list(fractions) == CLASSES
    assert sum(fractions.values()) + np.mean(labels == NONE_LABEL) == pytest.approx(1.0)


def test_same_seed_same_result_other_seed_other_noise(tiny_pipeline):
    first = _run(tiny_pipeline, _image(), seed=3)
    again = _run(tiny_pipeline, _image(), seed=3)
    other = _run(tiny_pipeline, _image(), seed=4)
    assert np.array_equal(first.labels[0], again.labels[0])
    assert np.array_equal(first.gray[0], again.gray[0])
    assert not np.array_equal(first.gray[0], other.gray[0])


@pytest.mark.parametrize("image_size", [(40, 24), (37, 21)])  # latent numel /16 or not
def test_batch_size_does_not_change_the_result(tiny_pipeline, image_size):
    results = [
        _run(tiny_pipeline, _image(*image_size), ensemble_size=4, batch_size=batch_size)
        for batch_size in (0, 1, 3, 4)
    ]
    for other in results[1:]:
        assert np.array_equal(results[0].labels[0], other.labels[0])
        np.testing.assert_allclose(results[0].gray[0], other.gray[0], atol=1e-3)


def test_images_segmented_together_match_images_segmented_alone(tiny_pipeline):
    """Images of one processing size share UNet calls; with a generator each, every image's
    labels are those it gets alone, whatever the batch size."""
    images = [_image(seed=0), _image(width=20, height=30, seed=1), _image(seed=2)]
    alone = [_run(tiny_pipeline, image, seed=i, ensemble_size=3).labels[0]
             for i, image in enumerate(images)]  # fmt: skip
    for batch_size in (0, 2):
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        together = tiny_pipeline(images, CLASSES, ensemble_size=3, batch_size=batch_size,
                                 generator=generators)  # fmt: skip
        for expected, labels in zip(alone, together.labels, strict=True):
            assert np.array_equal(expected, labels)


def test_one_generator_per_image_or_one_in_all(tiny_pipeline):
    with pytest.raises(SegDiffInputError, match="one generator per image"):
        tiny_pipeline([_image(), _image()], CLASSES, generator=[torch.Generator()])


def test_cpu_batches_a_small_unet_and_decodes_one_image_at_a_time(tiny_pipeline, monkeypatch):
    """The CPU rule of `_fastest_batch_size`: all members per UNet call, the VAE one by one."""
    unet_batches, decode_batches = [], []
    unet, decode = tiny_pipeline.unet.forward, tiny_pipeline._decode_gray
    monkeypatch.setattr(
        tiny_pipeline.unet,
        "forward",
        lambda x, *a, **k: unet_batches.append(len(x)) or unet(x, *a, **k),
    )
    monkeypatch.setattr(tiny_pipeline, "_decode_gray",
                        lambda x: decode_batches.append(len(x)) or decode(x))  # fmt: skip
    _run(tiny_pipeline, [_image(), _image(seed=1)], ensemble_size=3, num_inference_steps=2)
    assert unet_batches == [6, 6] and decode_batches == [1] * 6
    unet_batches.clear()
    _run(tiny_pipeline, [_image(), _image(seed=1)], ensemble_size=3, num_inference_steps=2,
         batch_size=4)  # fmt: skip
    assert unet_batches == [4, 2, 4, 2]


def test_aspect_ratio_is_kept_not_squashed(tiny_pipeline, monkeypatch):
    seen = []
    encode = tiny_pipeline._encode
    monkeypatch.setattr(tiny_pipeline, "_encode", lambda px: seen.append(px.shape) or encode(px))
    out = _run(tiny_pipeline, _image(width=90, height=30), processing_resolution=32)
    # Long edge 90 -> 32, short edge 30 -> 11, padded up to the latent multiple (4).
    assert seen[0][-2:] == (12, 32)
    assert out.labels[0].shape == (30, 90)
    native = _run(
        tiny_pipeline,
        _image(width=90, height=30),
        processing_resolution=32,
        match_input_resolution=False,
    )
    assert native.labels[0].shape == (11, 32)


def test_image_is_encoded_once_per_image_not_per_member(tiny_pipeline, monkeypatch):
    calls = []
    encode = tiny_pipeline.vae.encode
    monkeypatch.setattr(tiny_pipeline.vae, "encode", lambda x: calls.append(1) or encode(x))
    _run(tiny_pipeline, [_image(), _image(seed=1)], ensemble_size=5)
    assert len(calls) == 2


def test_each_member_votes(tiny_pipeline, monkeypatch):
    """Members drawing different classes give a split vote and the majority wins."""
    levels = iter([255.0, 255.0, 128.0])  # two members draw class 1, one draws class 0

    def fake_decode(latents):
        return torch.stack([torch.full((12, 20), next(levels)) for _ in latents])

    monkeypatch.setattr(tiny_pipeline, "_decode_gray", fake_decode)
    out = _run(
        tiny_pipeline,
        _image(width=20, height=12),
        ["a", "b"],
        ensemble_size=3,
        processing_resolution=0,
        permute_classes=False,  # every member's level 255 is class 1
    )
    assert np.all(out.labels[0] == 1)
    np.testing.assert_allclose(out.uncertainty[0], 1 / 3, atol=1e-6)


def test_permuted_members_vote_for_the_same_class_through_their_own_order(
    tiny_pipeline, monkeypatch
):
    """With permute_classes each member's levels mean other classes. Every member here draws
    class "b" at the level "b" has in its own order, so every vote must come back as "b"."""
    orders = []
    class_orders = _Run.class_orders

    def recorded(self, num_classes, device):
        orders.extend(class_orders(self, num_classes, device))
        return orders[-self.members :]

    monkeypatch.setattr(_Run, "class_orders", recorded)
    levels = depth_coding.gray_levels(3)
    member = iter(range(4))

    def draws_b(latents):
        positions = [orders[next(member)].tolist().index(1) for _ in latents]  # where "b" sits
        return torch.stack([torch.full((24, 40), float(levels[p])) for p in positions])

    monkeypatch.setattr(tiny_pipeline, "_decode_gray", draws_b)
    out = _run(
        tiny_pipeline,
        _image(),
        ["a", "b", "c"],
        ensemble_size=4,
        permute_classes=True,
        processing_resolution=0,
    )
    assert len(orders) == 4 and len({tuple(order.tolist()) for order in orders}) > 1
    assert np.all(out.labels[0] == 1)
    np.testing.assert_allclose(out.uncertainty[0], 0.0)


def test_vocabulary_larger_than_one_pass_is_decoded_in_two_passes(tiny_pipeline, monkeypatch):
    """Pass 1 segments each chunk of 4 classes; the classes found (class 1 and class 6; class
    3 covers too few pixels) are segmented again together, and the labels of that pass map
    back to their indices in the whole list."""
    passes = []

    def fake_segment(image_latents, chunk, runs):
        [run] = runs
        passes.append(list(chunk))
        labels = torch.full(run.valid_size, NONE_LABEL, dtype=torch.uint8)
        if len(passes) == 1:  # classes 0-3
            labels[:, :12] = chunk.index("class 1")
            labels[0, 39] = chunk.index("class 3")  # 1 of 960 pixels: not found
        elif len(passes) == 2:  # classes 4-7
            labels[:, 30:] = chunk.index("class 6")
        elif len(passes) == 4:  # pass 2 over ["class 1", "class 6"]
            labels[:, :10], labels[:, 10:20] = 1, 0
        return [(labels, torch.zeros(run.valid_size), torch.zeros(run.valid_size))]

    monkeypatch.setattr(tiny_pipeline, "_segment", fake_segment)
    classes = [f"class {i}" for i in range(10)]
    out = _run(tiny_pipeline, _image(), classes, max_classes_per_pass=4, processing_resolution=0)
    assert passes == [classes[0:4], classes[4:8], classes[8:10], ["class 1", "class 6"]]
    expected = np.full((24, 40), NONE_LABEL, dtype=np.uint8)
    expected[:, :10], expected[:, 10:20] = 6, 1
    assert np.array_equal(out.labels[0], expected)
    assert out.class_fractions[0]["class 6"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("classes", "message"),
    [([], "empty"), (["a", " "], "empty name"), (["a", "b", "a"], "twice"), ("a,b", "list")],
)
def test_bad_class_lists_are_clear_errors(tiny_pipeline, classes, message):
    with pytest.raises(SegDiffInputError, match=message):
        tiny_pipeline(_image(), classes)


def test_save_and_load_gives_the_same_labels(tiny_pipeline, tiny_model_dir):
    loaded = SegDiffPipeline.from_pretrained(tiny_model_dir)
    assert loaded.config.default_processing_resolution == 32
    first = _run(tiny_pipeline, _image(), seed=7)
    second = _run(loaded, _image(), seed=7)
    assert np.array_equal(first.labels[0], second.labels[0])
    assert not list(tiny_model_dir.rglob("*.bin")) and list(tiny_model_dir.rglob("*.safetensors"))


def test_more_than_255_classes_give_uint16_labels_with_65535_for_none(tiny_pipeline):
    classes = [f"c{i}" for i in range(256)]
    out = _run(tiny_pipeline, _image(), classes, max_classes_per_pass=128, ensemble_size=1)
    labels = out.labels[0]
    assert labels.dtype == np.uint16
    assert set(np.unique(labels)) <= set(range(256)) | {65535}
    assert len(out.class_fractions[0]) == 256


def test_golden_values_of_a_tiny_seeded_pipeline(tiny_pipeline):
    """A slice of the output of the seeded tiny pipeline for a fixed seed, as diffusers' pipeline
    tests pin theirs: any silent numerical change (preprocessing, noise, scheduler, decoding,
    vote) fails here. Regenerate the numbers only for an intended change, e.g. of the tiny
    configs in segdiff/model/tiny.py."""
    out = _run(tiny_pipeline, _image(), num_inference_steps=2, ensemble_size=3)
    gray, labels, uncertainty = out.gray[0], out.labels[0], out.uncertainty[0]
    expected_gray = [155.105, 159.5811, 154.1081, 145.8192, 150.2649, 141.3242, 145.051, 142.5087]
    np.testing.assert_allclose(gray[10, 16:24], expected_gray, atol=0.05)
    expected_grid = [
        [125.5248, 117.4224, 126.3526, 131.1810, 112.1209],
        [128.0312, 130.8526, 144.9202, 143.6968, 156.9043],
        [115.0536, 146.0150, 134.5654, 167.8295, 160.4596],
    ]
    np.testing.assert_allclose(gray[::8, ::8], expected_grid, atol=0.05)
    assert labels[10, 16:24].tolist() == [1, 1, 1, 0, 0, 0, 0, 1]
    counts = np.bincount(labels.ravel(), minlength=NONE_LABEL + 1)
    assert (counts[0], counts[1], counts[2], counts[NONE_LABEL]) == (346, 396, 218, 0)
    expected_uncertainty = [0.3333, 0.3333, 0.4333, 0.6333, 0.3667, 0.3333, 0.3333, 0.3333]
    np.testing.assert_allclose(uncertainty[10, 16:24], expected_uncertainty, atol=1e-3)


def test_bf16_autocast_keeps_fp32_weights_noise_and_outputs(tiny_pipeline):
    """Under bf16 autocast the UNet and VAE compute in bf16, the rest (noise, scheduler, vote)
    stays fp32: the gray maps stay near fp32's, and turning it off gives fp32's exactly."""
    fp32 = _run(tiny_pipeline, _image(), ensemble_size=3)
    tiny_pipeline.enable_bf16_autocast()
    try:
        bf16 = _run(tiny_pipeline, _image(), ensemble_size=3)
    finally:
        tiny_pipeline.enable_bf16_autocast(False)
    again = _run(tiny_pipeline, _image(), ensemble_size=3)
    assert tiny_pipeline.unet.dtype == torch.float32 and bf16.gray[0].dtype == np.float32
    assert np.abs(bf16.gray[0] - fp32.gray[0]).mean() < 2.0  # of 255; bf16 keeps ~3 digits
    assert not np.array_equal(bf16.gray[0], fp32.gray[0])
    assert np.array_equal(again.gray[0], fp32.gray[0])


def test_bad_arguments_are_input_errors_before_any_work(tiny_pipeline):
    with pytest.raises(SegDiffInputError, match="PIL image"):
        tiny_pipeline(np.zeros((8, 8, 3), np.uint8), CLASSES)
    with pytest.raises(SegDiffInputError, match="ensemble_size must be at least 1"):
        tiny_pipeline(_image(), CLASSES, ensemble_size=-1)
    with pytest.raises(SegDiffInputError, match="batch_size and processing_resolution"):
        tiny_pipeline(_image(), CLASSES, batch_size=-1)
    # one pass over more classes than a mask codes is bad input, not a crash
    with pytest.raises(SegDiffInputError, match="1 to 255"):
        _run(tiny_pipeline, _image(), [f"c{i}" for i in range(300)], max_classes_per_pass=300)


def test_pipeline_follows_diffusers_conventions(tiny_pipeline):
    assert tiny_pipeline.vae_scale_factor == 2  # the tiny VAE has two blocks
    assert tiny_pipeline.latent_multiple == 4
    assert ">>> pipe = SegDiffPipeline.from_pretrained" in SegDiffPipeline.__call__.__doc__
    assert "Args:" in SegDiffPipeline.__doc__ and "cam (`ContentAttentionModule`)" in (
        SegDiffPipeline.__doc__
    )


def test_the_docstring_example_runs():
    lines = SegDiffPipeline.__call__.__doc__.splitlines()
    code = [line.strip()[4:] for line in lines if line.strip().startswith((">>> ", "... "))]
    namespace: dict = {}
    exec("\n".join(code), namespace)  # the bundled model on the bundled example image
    assert namespace["labels"].shape == (96, 96) and namespace["labels"].dtype == np.uint8


def test_permuted_members_are_the_default_of_new_models_and_off_for_older_folders(
    tiny_pipeline, tmp_path
):
    import json

    tiny_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["default_permute_classes"] is True
    del index["default_permute_classes"]  # as saved before the key existed
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    older = SegDiffPipeline.from_pretrained(tmp_path)
    older.set_progress_bar_config(disable=True)
    assert older.config.default_permute_classes is False
    unset = _run(older, _image(), num_inference_steps=1, ensemble_size=3)
    fixed = _run(older, _image(), num_inference_steps=1, ensemble_size=3, permute_classes=False)
    permuted = _run(older, _image(), num_inference_steps=1, ensemble_size=3, permute_classes=True)
    assert np.array_equal(unset.gray[0], fixed.gray[0])
    assert not np.array_equal(unset.gray[0], permuted.gray[0])
