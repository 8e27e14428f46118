"""The latent cache: the same samples as encoding on the fly, drawn deterministically."""

import pytest
import torch

from segdiff.data.prepared import open_prepared
from segdiff.errors import SegDiffInputError
from segdiff.model.tiny import build_tiny_components
from segdiff.training import latent_cache
from segdiff.training.batches import ClassListSettings, SampleSettings, TrainingSamples, collate
from segdiff.training.latent_cache import LatentCache, cache_size, check_cache_fits

VAE = {"block_out_channels": [16, 16], "norm_num_groups": 8}


@pytest.fixture(scope="module")
def samples(shapes_root):
    settings = SampleSettings(
        resolution=32,
        crop=32,
        scale=(1.0, 1.25),
        hflip=True,
        class_lists=ClassListSettings(max_classes=7, max_negatives=3),
        seed=3,
    )
    return TrainingSamples(open_prepared(shapes_root, "train"), settings)


@pytest.fixture(scope="module")
def vae():
    return build_tiny_components(seed=0, overrides={"vae": VAE})["vae"].eval()


@pytest.fixture(scope="module")
def cache(samples, vae):
    with torch.no_grad():
        return LatentCache.build(samples, vae, variants=3, batch_size=5)


def test_each_variant_is_the_sample_encoded_on_the_fly(samples, vae, cache):
    assert cache.image_latents.shape[0] == 3 * len(samples)
    for variant, index in [(0, 0), (1, 5), (2, len(samples) - 1)]:
        batch = collate([samples[(variant, index)]])
        with torch.no_grad():
            image_latent, mask_latent = batch.latents(vae)
        row = variant * len(samples) + index
        torch.testing.assert_close(cache.image_latents[row], image_latent[0])
        torch.testing.assert_close(cache.mask_latents[row], mask_latent[0])
        assert torch.equal(cache.labels[row], batch.labels[0])
        assert cache.classes[row] == batch.classes[0]


def test_a_draw_is_a_variant_flipped_or_not_on_the_latent_grid(samples, cache):
    seen = set()
    for epoch in range(12):
        image, mask, labels, classes = cache[(epoch, 2)]
        assert torch.equal(image, cache[(epoch, 2)][0])  # the same key draws the same sample
        rows = [v * len(samples) + 2 for v in range(3)]
        for row in rows:
            for flip in (False, True):
                stored = [cache.image_latents[row], cache.mask_latents[row], cache.labels[row]]
                if flip:
                    stored = [t.flip(-1) for t in stored]
                drawn = (image, mask, labels)
                if all(torch.equal(a, b) for a, b in zip(stored, drawn, strict=True)):
                    assert classes == cache.classes[row]
                    seen.add((row, flip))
    assert len(seen) >= 4, f"12 draws hit only {seen}"


def test_a_batch_of_cached_samples_skips_the_vae(cache):
    batch = latent_cache.collate_latents([cache[(0, 0)], cache[(0, 1)]])
    assert batch.latents(None)[0].shape == (2, *cache.image_latents.shape[1:])
    assert batch.labels.dtype == torch.uint8 and len(batch.classes) == 2


def test_the_size_is_known_before_building_and_a_cache_too_big_is_refused(samples, vae, cache):
    assert cache_size(samples, vae, 3) == cache.nbytes
    check_cache_fits(1024, processes=1)
    with pytest.raises(SegDiffInputError, match="data.cache_variants"):
        check_cache_fits(2**62, processes=1)
