"""Training samples: augmented crops whose masks are re-coded for a freshly sampled class list.

A prepared mask is depth-coded for its image's own class list. Each time a sample is drawn,
the mask is decoded with that list, cropped and flipped with the image, and coded again for a
new list: the classes left in the crop plus a few absent vocabulary classes ("negatives"), in a
random order. So the model sees every class at many gray levels and learns to bind a class to
its level through the text, and to leave absent classes empty (docs/method.md).

Every random choice comes from a generator seeded by (seed, epoch, index), so a sample is the
same whichever process or worker draws it, and a resumed run sees the same data.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from string import ascii_lowercase

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from segdiff import depth_coding
from segdiff.data.prepared import PreparedSplit
from segdiff.errors import SegDiffInputError
from segdiff.imageio import load_rgb
from segdiff.training.objective import encode_pair


@dataclass(frozen=True)
class ClassListSettings:
    """How each sample's class list is drawn (see `sample_class_list`)."""

    max_classes: int
    max_negatives: int
    min_negatives: int = 0
    drop_present: float = 0.0
    made_up_negatives: int = 0
    """Up to this many made-up names (random letters) join the negatives, as room allows."""


@dataclass(frozen=True)
class SampleSettings:
    resolution: int
    """Scale reference: at scale 1 the short image side is this long."""
    crop: int
    """Side of the square crop (the VAE pre-trains on crops smaller than the resolution)."""
    scale: tuple[float, float]
    hflip: bool
    class_lists: ClassListSettings
    seed: int


@dataclass
class Batch:
    """Images and masks in pixels; the training step encodes them with the frozen VAE."""

    pixels: torch.Tensor
    """(B, 3, R, R) images in [-1, 1]."""
    masks: torch.Tensor
    """(B, 3, R, R) depth-coded masks in [-1, 1] (the gray level in all 3 channels)."""
    classes: list[list[str]]
    """Each sample's class list, in the order its mask is coded for."""

    def to(self, device: torch.device) -> "Batch":
        # non_blocking: a pinned batch (pin_memory below) copies while the GPU still works
        pixels, masks = (t.to(device, non_blocking=True) for t in (self.pixels, self.masks))
        return Batch(pixels, masks, self.classes)

    def pin_memory(self) -> "Batch":
        """Page-locked copies, for a DataLoader with pin_memory=True (CUDA)."""
        return Batch(self.pixels.pin_memory(), self.masks.pin_memory(), self.classes)

    @property
    def labels(self) -> torch.Tensor:
        """(B, R, R) uint8 label maps: index into the sample's class list, NONE_LABEL for
        none; decoded from the masks."""
        gray = (self.masks[:, 0] + 1.0) * 127.5
        decoded = [
            depth_coding.decode(g, len(names)) for g, names in zip(gray, self.classes, strict=True)
        ]
        return torch.stack(decoded)

    def latents(self, vae: AutoencoderKL) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and mask latents (scaled, float32), encoded by ``vae``."""
        return encode_pair(vae, self.pixels, self.masks)


@dataclass
class LatentBatch:
    """Image and mask already encoded (`segdiff.training.latent_cache`): no VAE call."""

    image_latents: torch.Tensor
    """(B, C, R/f, R/f) image latents, scaled as the UNet takes them."""
    mask_latents: torch.Tensor
    classes: list[list[str]]
    labels: torch.Tensor
    """(B, R, R) uint8 label maps, as `Batch.labels`."""

    def to(self, device: torch.device) -> "LatentBatch":
        return LatentBatch(
            self.image_latents.to(device),
            self.mask_latents.to(device),
            self.classes,
            self.labels.to(device),
        )

    def latents(self, vae: AutoencoderKL) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_latents, self.mask_latents


def sample_class_list(
    present: list[str],
    vocabulary: tuple[str, ...],
    settings: ClassListSettings,
    rng: np.random.Generator,
) -> list[str]:
    """The class list of one sample, shuffled: the present classes, each left out with
    probability ``drop_present`` (its pixels become "none") and at most ``max_classes`` of them
    (a random subset beyond), plus ``min_negatives..max_negatives`` absent vocabulary classes
    and up to ``made_up_negatives`` made-up names as room allows. A list is never empty: with
    nothing else in it, it gets one negative."""
    kept = [name for name in present if rng.random() >= settings.drop_present]
    if len(kept) > settings.max_classes:
        kept = [kept[i] for i in rng.choice(len(kept), settings.max_classes, replace=False)]
    kept_set = set(kept)
    absent = [name for name in vocabulary if name not in kept_set]
    floor = 0 if kept else 1  # an empty list gets one negative
    room = max(floor, min(settings.max_negatives, settings.max_classes - len(kept), len(absent)))
    low = min(max(settings.min_negatives, floor), room)
    count = int(rng.integers(low, room + 1))
    negatives = [absent[i] for i in rng.choice(len(absent), count, replace=False)]
    names = kept + negatives
    if settings.made_up_negatives:
        room = settings.max_classes - len(names)
        count = int(rng.integers(0, min(settings.made_up_negatives, room) + 1))
        names += made_up_names(count, set(vocabulary), rng)
    return [names[i] for i in rng.permutation(len(names))]


def made_up_names(count: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    """``count`` words of 3-10 random letters, none in ``taken``: names no image shows."""
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(list(ascii_lowercase), int(rng.integers(3, 11))))
        if name not in taken and name not in names:
            names.append(name)
    return names


class TrainingSamples(torch.utils.data.Dataset):
    """Sample ``(epoch, index)`` of a prepared split -> (pixels, mask, class list)."""

    def __init__(self, split: PreparedSplit, settings: SampleSettings):
        if not split.image_names:
            raise SegDiffInputError(f"split {split.split!r} of {split.root} has no images")
        self.split = split
        self.names = split.image_names
        self.settings = settings

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        epoch, index = key
        s = self.settings
        rng = np.random.default_rng([s.seed, epoch, index])
        name = self.names[index]
        image = load_rgb(self.split.image_path(name))
        listed = list(self.split.classes(name))
        labels = self.split.local_labels(name)
        if labels.shape != (image.height, image.width):
            raise SegDiffInputError(
                f"mask {self.split.mask_path(name)} is {labels.shape[1]}x{labels.shape[0]}, its "
                f"image {image.width}x{image.height}"
            )
        pixels, labels = augment(np.asarray(image), labels, s, rng)

        present_ids = [int(k) for k in np.unique(labels) if k != depth_coding.NONE_LABEL]
        classes = sample_class_list(
            [listed[k] for k in present_ids], self.split.vocabulary, s.class_lists, rng
        )
        position = {name: k for k, name in enumerate(classes)}
        new_index = {k: position[name] for k, name in enumerate(listed) if name in position}
        mask = depth_coding.encode(
            depth_coding.recode(labels, new_index, len(classes)), len(classes)
        )

        pixels = torch.tensor(pixels).permute(2, 0, 1).float() / 127.5 - 1.0
        mask = torch.tensor(mask).float()[None].expand(3, -1, -1) / 127.5 - 1.0
        return pixels, mask, classes


def augment(
    image: np.ndarray, labels: np.ndarray, settings: SampleSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale (short side = resolution x U(scale)), random square crop, random h-flip.
    Images resize bilinearly, labels by nearest; a crop larger than the image is padded with
    mid-gray pixels and "none" labels."""
    size = settings.crop
    height, width = labels.shape
    factor = settings.resolution / min(height, width) * rng.uniform(*settings.scale)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    labels = np.asarray(Image.fromarray(labels).resize((new_w, new_h), Image.Resampling.NEAREST))
    if new_h < size or new_w < size:
        pad_h, pad_w = max(0, size - new_h), max(0, size - new_w)
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=128)
        labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=depth_coding.NONE_LABEL)
    top = int(rng.integers(0, labels.shape[0] - size + 1))
    left = int(rng.integers(0, labels.shape[1] - size + 1))
    image = image[top : top + size, left : left + size]
    labels = labels[top : top + size, left : left + size]
    if settings.hflip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def collate(samples: list[tuple[torch.Tensor, torch.Tensor, list[str]]]) -> Batch:
    pixels, masks, classes = zip(*samples, strict=True)
    return Batch(torch.stack(pixels), torch.stack(masks), list(classes))


class BatchOrder(torch.utils.data.Sampler):
    """The sample keys of each micro-batch of this process, from a data position on.

    Every epoch is a seeded permutation of the split; the run walks through it in global
    micro-batches of ``batch_size x num_processes`` samples, and process ``rank`` takes its
    slice of each. ``position`` counts global micro-batches already consumed, so a resumed run
    continues exactly where the checkpoint left off. An epoch's tail that does not fill a
    global micro-batch is skipped.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        rank: int,
        num_processes: int,
        seed: int,
        position: int = 0,
    ):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.rank = rank
        self.num_processes = num_processes
        self.seed = seed
        self.position = position
        self.per_epoch = num_samples // (batch_size * num_processes)
        if self.per_epoch == 0:
            raise SegDiffInputError(
                f"the training split has {num_samples} images, fewer than one batch "
                f"({batch_size} x {num_processes} processes); lower train.batch_size"
            )

    def epoch_of(self, position: int) -> int:
        return position // self.per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        position = self.position
        while True:
            epoch, step = divmod(position, self.per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            global_size = self.batch_size * self.num_processes
            start = step * global_size + self.rank * self.batch_size
            yield [(epoch, int(i)) for i in order[start : start + self.batch_size]]
            position += 1
