import torch

from segdiff.model.tiny import build_tiny_components
from segdiff.recipes import NoiseRecipe
from segdiff.training.objective import Denoiser, diffusion_loss, encode_pair, multires_noise


def test_multires_noise_has_unit_variance_and_low_frequencies():
    like = torch.zeros(4, 4, 32, 32)
    plain = multires_noise(like, torch.Generator().manual_seed(0), 0, 0.5)
    pyramid = multires_noise(like, torch.Generator().manual_seed(0), 4, 0.8)
    assert pyramid.shape == like.shape
    assert abs(float(pyramid.std()) - 1.0) < 0.05

    # neighbouring pixels correlate only when coarse noise is added
    def neighbour_correlation(x):
        return float((x[..., 1:] * x[..., :-1]).mean())

    assert abs(neighbour_correlation(plain)) < 0.05
    assert neighbour_correlation(pyramid) > 0.2


def test_loss_matches_the_pipeline_inputs():
    parts = build_tiny_components(seed=0)
    denoiser = Denoiser(parts["unet"], parts["cam"])
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    masks = torch.full((2, 3, 32, 32), 0.5)
    image_latents, mask_latents = encode_pair(parts["vae"], pixels, masks)
    assert image_latents.shape == mask_latents.shape == (2, 4, 16, 16)
    assert not image_latents.requires_grad
    embeddings = [torch.randn(3, 32), torch.randn(5, 32)]
    seen = {}

    def spy(unet_input, timesteps, class_embeddings):
        seen["input"], seen["timesteps"] = unet_input, timesteps
        return denoiser(unet_input, timesteps, class_embeddings)

    noise = NoiseRecipe(min_timestep=10, max_timestep=20)
    loss = diffusion_loss(
        spy,
        parts["scheduler"],
        image_latents,
        mask_latents,
        embeddings,
        torch.Generator().manual_seed(0),
        noise,
    )
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert seen["input"].shape == (2, 8, 16, 16)
    torch.testing.assert_close(seen["input"][:, :4], image_latents)  # image latent first
    assert ((seen["timesteps"] >= 10) & (seen["timesteps"] <= 20)).all()
    loss.backward()
    assert parts["cam"].level_mlp[-1].weight.grad is not None
