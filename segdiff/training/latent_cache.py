"""The latent cache (``data.cache_variants``): every training sample encoded once, not every step.

The VAE is frozen, so encoding the same crop again gives the same latents; for a tiny model
that encoding is half of a training step. With V variants, `LatentCache.build` encodes
``TrainingSamples[(v, i)]`` for v < V and every image i once (its crop, flip, class list and
re-coded mask) and keeps the image latent, the mask latent, the class list and the label map
in memory. Training then draws sample ``(epoch, index)`` from the cache: a variant picked, and
a horizontal flip applied to both latents and the label map ("augment on the latent grid"),
by a generator seeded with (seed, epoch, index). So the samples are deterministic as before:
every process draws its own keys of the same `BatchOrder`, and a resumed run rebuilds the
same cache and draws the same samples.
"""

import os
from collections.abc import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL

from segdiff.errors import SegDiffInputError
from segdiff.memory import device_memory, format_bytes
from segdiff.training.batches import LatentBatch, TrainingSamples, collate

MEMORY_SHARE = 0.25
"""The cache may take at most this share of the machine's memory, over all its processes."""
_DRAW_STREAM = 1
"""Tells the cache's draws apart from the sample augmentation seeded with the same key."""


class LatentCache(torch.utils.data.Dataset):
    """Sample ``(epoch, index)`` -> (image latent, mask latent, label map, class list), drawn
    from the pre-encoded variants of image ``index``."""

    def __init__(
        self,
        image_latents: torch.Tensor,
        mask_latents: torch.Tensor,
        labels: torch.Tensor,
        classes: list[list[str]],
        num_images: int,
        seed: int,
        hflip: bool,
    ):
        self.image_latents = image_latents
        """(V * N, C, h, w): variant v of image i at row v * N + i."""
        self.mask_latents = mask_latents
        self.labels = labels
        """(V * N, R, R) uint8 label maps, NONE_LABEL for none."""
        self.classes = classes
        self.num_images = num_images
        self.variants = len(classes) // num_images
        self.seed = seed
        self.hflip = hflip

    @classmethod
    def build(
        cls,
        samples: TrainingSamples,
        vae: AutoencoderKL,
        variants: int,
        batch_size: int,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> "LatentCache":
        """Encode ``variants`` variants of every sample with ``vae`` (on its device, in its
        dtype), ``batch_size`` at a time; ``on_progress(done, total)`` after each batch.
        Refused (SegDiffInputError) before anything is encoded when it would not fit."""
        check_cache_fits(cache_size(samples, vae, variants), local_processes())
        keys = [(v, i) for v in range(variants) for i in range(len(samples))]
        image_latents, mask_latents, labels, classes = [], [], [], []
        for start in range(0, len(keys), batch_size):
            batch = collate([samples[key] for key in keys[start : start + batch_size]])
            batch = batch.to(vae.device)
            images, masks = batch.latents(vae)
            image_latents.append(images.cpu())
            mask_latents.append(masks.cpu())
            labels.append(batch.labels.cpu())
            classes.extend(batch.classes)
            on_progress(min(start + batch_size, len(keys)), len(keys))
        settings = samples.settings
        return cls(
            torch.cat(image_latents),
            torch.cat(mask_latents),
            torch.cat(labels),
            classes,
            len(samples),
            settings.seed,
            settings.hflip,
        )

    @property
    def nbytes(self) -> int:
        tensors = (self.image_latents, self.mask_latents, self.labels)
        return sum(t.numel() * t.element_size() for t in tensors)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(
        self, key: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index, _DRAW_STREAM])
        variant = int(rng.integers(self.variants))
        flip = self.hflip and rng.random() < 0.5
        row = variant * self.num_images + index
        tensors = [self.image_latents[row], self.mask_latents[row], self.labels[row]]
        if flip:
            tensors = [t.flip(-1) for t in tensors]
        return (*tensors, self.classes[row])


def collate_latents(
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]],
) -> LatentBatch:
    image_latents, mask_latents, labels, classes = zip(*samples, strict=True)
    return LatentBatch(
        torch.stack(image_latents), torch.stack(mask_latents), list(classes), torch.stack(labels)
    )


def cache_size(samples: TrainingSamples, vae: AutoencoderKL, variants: int) -> int:
    """Bytes the cache will hold (latents in float32, uint8 label maps), before building it."""
    crop = samples.settings.crop
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = vae.config.latent_channels * (crop // factor) ** 2 * 4
    return variants * len(samples) * (2 * latent + crop * crop)


def check_cache_fits(needed: int, processes: int) -> None:
    """SegDiffInputError when ``processes`` copies of a cache of ``needed`` bytes would take
    more than MEMORY_SHARE of this machine's memory."""
    total = device_memory(torch.device("cpu"))
    if needed * processes > MEMORY_SHARE * total:
        copies = f" x {processes} processes" if processes > 1 else ""
        raise SegDiffInputError(
            f"the latent cache (data.cache_variants) would take {format_bytes(needed)}{copies}, "
            f"more than {MEMORY_SHARE:.0%} of the {format_bytes(total)} this machine has; "
            "lower data.cache_variants (0 turns the cache off) or data.resolution"
        )


def local_processes() -> int:
    """Training processes on this machine (accelerate and torchrun set LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
