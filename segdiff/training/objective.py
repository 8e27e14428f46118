"""The training objective: v-prediction on the mask latent, conditioned on the image latent.

Exactly the inference path of SegDiffPipeline, run backwards: the image latent is the VAE
encoder's mode times ``scaling_factor``, the mask (the gray level in all 3 channels, [-1, 1])
is encoded the same way, and the UNet sees ``cat([image_latent, noisy_mask_latent])``.
"""

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import nn

from segdiff.model.cam import ContentAttentionModule
from segdiff.recipes import NoiseRecipe


class Denoiser(nn.Module):
    """UNet and CAM as one module, so DDP, autocast and EMA treat the trainable part as one."""

    def __init__(self, unet: UNet2DConditionModel, cam: ContentAttentionModule):
        super().__init__()
        self.unet = unet
        self.cam = cam

    def forward(
        self, unet_input: torch.Tensor, timesteps: torch.Tensor, embeddings: list[torch.Tensor]
    ) -> torch.Tensor:
        context, mask = self.cam(embeddings)
        return self.unet(
            unet_input, timesteps, encoder_hidden_states=context, encoder_attention_mask=mask
        ).sample


@torch.no_grad()
def encode_pair(
    vae: AutoencoderKL, pixels: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and mask latents from one encoder call (the VAE is frozen: no gradients)."""
    inputs = torch.cat([pixels, masks]).to(dtype=vae.dtype)
    latents = vae.encode(inputs).latent_dist.mode() * vae.config.scaling_factor
    image_latents, mask_latents = latents.float().chunk(2)
    return image_latents, mask_latents


def multires_noise(
    like: torch.Tensor, generator: torch.Generator, iterations: int, discount: float
) -> torch.Tensor:
    """Gaussian noise plus coarser noise upsampled onto it (pyramid noise), rescaled to unit
    variance; low frequencies get destroyed faster, which suits large uniform mask regions."""
    batch, channels, height, width = like.shape
    noise = torch.randn(like.shape, generator=generator, device=like.device)
    if iterations == 0:
        return noise
    for i in range(1, iterations + 1):
        scale = 2**i
        if height // scale < 1 or width // scale < 1:
            break
        coarse = torch.randn(
            (batch, channels, height // scale, width // scale),
            generator=generator,
            device=like.device,
        )
        noise += F.interpolate(coarse, size=(height, width), mode="bilinear") * discount**i
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)


def diffusion_loss(
    denoiser: nn.Module,
    scheduler: DDIMScheduler,
    image_latents: torch.Tensor,
    mask_latents: torch.Tensor,
    embeddings: list[torch.Tensor],
    generator: torch.Generator,
    noise_recipe: NoiseRecipe,
) -> torch.Tensor:
    """MSE between the UNet's prediction and the scheduler's target at a random timestep."""
    batch = mask_latents.shape[0]
    noise = multires_noise(
        mask_latents, generator, noise_recipe.multires_iterations, noise_recipe.multires_discount
    )
    timesteps = torch.randint(
        noise_recipe.min_timestep,
        noise_recipe.max_timestep + 1,
        (batch,),
        generator=generator,
        device=mask_latents.device,
    )
    noisy = scheduler.add_noise(mask_latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        target = scheduler.get_velocity(mask_latents, noise, timesteps)
    elif prediction_type == "epsilon":
        target = noise
    else:
        raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r}")
    prediction = denoiser(torch.cat([image_latents, noisy], dim=1), timesteps, embeddings)
    return F.mse_loss(prediction.float(), target.float())
