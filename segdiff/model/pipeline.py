"""SegDiffPipeline: image + ordered class names -> label map, by denoising a depth-coded mask.

Each image is resized (aspect kept) and padded to the latent multiple, encoded by the VAE
once, and every ensemble member denoises its own noise conditioned on that latent and on the
CAM tokens of the classes. The members of all images of one processing size run together, in
UNet and VAE calls of the batch size that is fastest on the device (`_fastest_batch_size`); each
decoded gray map snaps to class indices (depth coding), and each image's members vote per
pixel. docs/method.md explains the
method, docs/model-folder.md what a saved model holds.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from segdiff import depth_coding
from segdiff.class_lists import check_class_names
from segdiff.errors import SegDiffInputError
from segdiff.memory import check_fits
from segdiff.model import DEFAULTS_OF_OLDER_FOLDERS
from segdiff.model.attention import use_few_keys_attention
from segdiff.model.cam import ContentAttentionModule
from segdiff.model.text import DEFAULT_PROMPT_TEMPLATE, ClassEmbedder

CPU_BATCHED_UNET_WIDTH = 128
"""On a CPU, a UNet whose first block is at most this wide runs its rows in one batch."""
# A class counts as found in a first-pass chunk when it covers at least this pixel fraction.
FOUND_FRACTION = 0.002
EXAMPLE_DOC_STRING = """
    Examples:
    ```py
    >>> import torch
    >>> from PIL import Image
    >>> from segdiff import SegDiffPipeline
    >>> from segdiff.model import BUNDLED_MODEL_DIR

    >>> # the bundled tiny model knows synthetic shapes only; give a trained model's folder
    >>> # or hub id for real images
    >>> pipe = SegDiffPipeline.from_pretrained(BUNDLED_MODEL_DIR)
    >>> image = Image.open(BUNDLED_MODEL_DIR.parent / "examples" / "shapes.png")
    >>> classes = ["background", "circle", "square", "triangle"]
    >>> out = pipe(image, classes, generator=torch.Generator().manual_seed(0))
    >>> labels = out.labels[0]  # (height, width) uint8: index into classes, 255 = none
    >>> out.class_fractions[0]["circle"]  # share of the pixels labeled circle
    ```
"""


@dataclass(frozen=True)
class PipelineDefaults:
    """The inference settings a model is saved with (model_index.json): the one source of
    their default values. A recipe's ``model`` section sets them for the model it trains."""

    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    default_denoising_steps: int = 10
    default_ensemble_size: int = 5
    default_processing_resolution: int = 768
    max_classes_per_pass: int = 32
    """Longer class lists are decoded in two passes (see ``_segment_vocabulary``)."""
    default_permute_classes: bool = True
    """Ensemble members after the first see the classes in their own random order. A model
    folder saved without this key means False (DEFAULTS_OF_OLDER_FOLDERS)."""


DEFAULTS = PipelineDefaults()


@dataclass
class SegDiffOutput(BaseOutput):
    """Output of `SegDiffPipeline`, one entry per input image.

    Args:
        labels (`list[np.ndarray]`):
            Class index per pixel, (height, width): uint8 with 255 for "none of the classes",
            or for more than 255 classes uint16 with 65535 for none.
        gray (`list[np.ndarray]`):
            The gray map the model drew (0..255, float32): the mean of the ensemble members
            that kept the given class order.
        uncertainty (`list[np.ndarray]`):
            1 - the winning class's share of the votes (0 = every member agrees).
        class_fractions (`list[dict[str, float]]`):
            The share of the pixels labeled with each class.
    """

    labels: list[np.ndarray]
    gray: list[np.ndarray]
    uncertainty: list[np.ndarray]
    class_fractions: list[dict[str, float]]


class SegDiffPipeline(DiffusionPipeline):
    r"""Open-vocabulary semantic segmentation with a fine-tuned Stable Diffusion 2.

    Given an image and an ordered list of class names, the UNet denoises a depth-coded mask
    latent (class k of K at gray level round(255 * (k + 1) / K), gray 0 for none), conditioned
    on the image latent and on one CAM token per class; the decoded gray levels are read back
    as class indices, and an ensemble of runs votes per pixel.

    Args:
        vae (`AutoencoderKL`):
            Encodes the image and decodes the mask latent (frozen during training).
        text_encoder (`CLIPTextModel`):
            Embeds the prompt of each class name (frozen during training).
        tokenizer (`CLIPTokenizer`):
            Tokenizes the class prompts.
        unet (`UNet2DConditionModel`):
            Denoiser with 8 input channels: the image latent and the noisy mask latent. Its
            layers on diffusers' default attention processor get `FewKeysAttnProcessor`
            (the same attention, faster on a CPU for short class lists).
        scheduler (`DDIMScheduler`):
            DDIM with trailing timestep spacing, so that even one step starts from pure noise.
        cam (`ContentAttentionModule`):
            Turns the class embeddings, in class-list order, into the UNet's context.
        prompt_template (`str`, defaults to `"a photo of a {}."`):
            Prompt each class name is put in before the text encoder sees it.
        default_denoising_steps (`int`, defaults to 10):
            DDIM steps when a call does not give `num_inference_steps`.
        default_ensemble_size (`int`, defaults to 5):
            Denoising runs per image when a call does not give `ensemble_size`.
        default_processing_resolution (`int`, defaults to 768):
            Long edge the image is resized to when a call does not give one; 0 keeps it.
        max_classes_per_pass (`int`, defaults to 32):
            More classes than this are decoded in two passes (see `_segment_vocabulary`).
        default_permute_classes (`bool`, defaults to `True`):
            Whether a call that does not give `permute_classes` shuffles the class order of
            each ensemble member after the first; False for model folders saved without it.
    """

    model_cpu_offload_seq = "text_encoder->cam->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler,
        cam: ContentAttentionModule,
        prompt_template: str = DEFAULTS.prompt_template,
        default_denoising_steps: int = DEFAULTS.default_denoising_steps,
        default_ensemble_size: int = DEFAULTS.default_ensemble_size,
        default_processing_resolution: int = DEFAULTS.default_processing_resolution,
        max_classes_per_pass: int = DEFAULTS.max_classes_per_pass,
        default_permute_classes: bool = DEFAULTS.default_permute_classes,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            cam=cam,
        )
        self.register_to_config(
            prompt_template=prompt_template,
            default_denoising_steps=default_denoising_steps,
            default_ensemble_size=default_ensemble_size,
            default_processing_resolution=default_processing_resolution,
            max_classes_per_pass=max_classes_per_pass,
            default_permute_classes=default_permute_classes,
        )
        use_few_keys_attention(unet)
        self._bf16_autocast = False
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.class_embedder = ClassEmbedder(tokenizer, text_encoder, prompt_template)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs):
        """Load a segdiff model folder or hub id (safetensors only, no remote code)."""
        # loading.py imports this module, hence the import here
        from segdiff.model.folder import COMPONENTS
        from segdiff.model.loading import check_is_segdiff_model

        given = [name for name in kwargs if name in COMPONENTS]
        check_is_segdiff_model(pretrained_model_name_or_path, kwargs.get("cache_dir"), given)
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """The config; a default the folder predates takes the value it had then
        (DEFAULTS_OF_OLDER_FOLDERS)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if "_class_name" in config:
            for key, value in DEFAULTS_OF_OLDER_FOLDERS.items():
                config.setdefault(key, value)
        return loaded

    @classmethod
    def from_stable_diffusion(cls, sd_name_or_path: str | Path, **kwargs) -> "SegDiffPipeline":
        """A fresh, untrained segdiff model built from a Stable Diffusion 2 folder or hub id."""
        from segdiff.model.from_sd import components_from_stable_diffusion

        return cls(**components_from_stable_diffusion(sd_name_or_path, **kwargs))

    def enable_bf16_autocast(self, enabled: bool = True) -> None:
        """Run the UNet and the VAE under `torch.autocast` in bfloat16, the weights staying
        in their dtype: matrix products and convolutions in bf16, normalizations and softmax in
        fp32. On a CPU with native bf16 (AVX-512 BF16 or AMX) the tiny model at 256 px runs
        1.7x as fast as in fp32 at the same mIoU, where casting the weights to bf16 cost 0.7-0.9
        mIoU (benchmarks/README.md). What `--half-precision` uses on such CPUs."""
        self._bf16_autocast = enabled

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self._bf16_autocast)

    @property
    def defaults(self) -> PipelineDefaults:
        """The inference settings saved with this model."""
        return PipelineDefaults(**{f.name: self.config[f.name] for f in fields(PipelineDefaults)})

    @property
    def latent_multiple(self) -> int:
        """Image sides must be multiples of this for the VAE and every UNet downsampling."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.vae_scale_factor * unet_factor

    def check_inputs(
        self,
        images: list[Image.Image],
        num_inference_steps: int,
        ensemble_size: int,
        processing_resolution: int,
        batch_size: int,
        max_classes_per_pass: int,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> None:
        """Raise a SegDiffInputError naming the first argument a call cannot use."""
        if not images or not all(isinstance(image, Image.Image) for image in images):
            raise SegDiffInputError("images must be one PIL image or a non-empty list of them")
        if isinstance(generator, list) and len(generator) != len(images):
            raise SegDiffInputError(
                f"generator is a list of {len(generator)} for {len(images)} images; give one "
                "generator per image, or a single one"
            )
        for name, value in (
            ("num_inference_steps", num_inference_steps),
            ("ensemble_size", ensemble_size),
            ("max_classes_per_pass", max_classes_per_pass),
        ):
            if value < 1:
                raise SegDiffInputError(f"{name} must be at least 1, got {value}")
        if batch_size < 0 or processing_resolution < 0:
            raise SegDiffInputError("batch_size and processing_resolution must be >= 0")

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        images: Image.Image | list[Image.Image],
        classes: list[str],
        num_inference_steps: int | None = None,
        ensemble_size: int | None = None,
        processing_resolution: int | None = None,
        match_input_resolution: bool = True,
        batch_size: int = 0,
        permute_classes: bool | None = None,
        max_classes_per_pass: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> SegDiffOutput:
        """Segment ``images`` into ``classes``.

        Args:
            images (`PIL.Image.Image` or `list[PIL.Image.Image]`):
                The images; any mode is converted to RGB.
            classes (`list[str]`):
                Class names, in order; label k of the output is ``classes[k]``.
            num_inference_steps (`int`, *optional*):
                DDIM steps (default: the model's `default_denoising_steps`).
            ensemble_size (`int`, *optional*):
                Denoising runs per image, combined by per-pixel vote (default: the model's).
            processing_resolution (`int`, *optional*):
                Long edge the image is resized to, aspect kept; 0 keeps it native (default:
                the model's).
            match_input_resolution (`bool`, defaults to `True`):
                Return maps at the input size (labels resized by nearest neighbour).
            batch_size (`int`, defaults to 0):
                Ensemble members per UNet and VAE call; the members of all images of one
                processing size share these calls. 0 picks the fastest for the device (see
                `_fastest_batch_size`); the result is the same for every batch size, but for
                the last bits of fp32 floats.
            permute_classes (`bool`, *optional*):
                Give each member after the first a shuffled class order, so that
                level-specific biases average out in the vote (default: the model's
                `default_permute_classes`).
            max_classes_per_pass (`int`, *optional*):
                Longer class lists are decoded in two passes (see ``_segment_vocabulary``);
                default: the model's.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes the noise, and so the result, reproducible. A list gives each image its
                own generator, and then each image's result is the same as when it is
                segmented alone, whatever the other images and the batch size.

        Examples:

        Returns:
            `SegDiffOutput`: labels, gray maps, uncertainty and class fractions per image.
        """
        images = [images] if isinstance(images, Image.Image) else list(images)
        classes = check_class_names(classes)
        steps = num_inference_steps or self.config.default_denoising_steps
        members = ensemble_size or self.config.default_ensemble_size
        resolution = (
            self.config.default_processing_resolution
            if processing_resolution is None
            else processing_resolution
        )
        per_pass = max_classes_per_pass or self.config.max_classes_per_pass
        if permute_classes is None:
            permute_classes = self.config.default_permute_classes
        self.check_inputs(images, steps, members, resolution, batch_size, per_pass, generator)
        generators = generator if isinstance(generator, list) else [generator] * len(images)

        prepared = [self._preprocess(image, resolution) for image in images]
        results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = [None] * len(images)
        for group in _same_size_groups([pixels.shape for pixels, _ in prepared]):
            pixels = torch.cat([prepared[i][0] for i in group])
            image_latents = self._in_batches(
                "encode", pixels.shape, batch_size, lambda part, px=pixels: self._encode(px[part])
            )
            runs = [
                _Run(steps, members, batch_size, permute_classes, generators[i],
                     prepared[i][1], per_pass)
                for i in group
            ]  # fmt: skip
            segmented = self._segment_vocabulary(list(image_latents.split(1)), classes, runs)
            for i, result in zip(group, segmented, strict=True):
                results[i] = result

        output = SegDiffOutput(labels=[], gray=[], uncertainty=[], class_fractions=[])
        for image, (labels, gray, uncertainty) in zip(images, results, strict=True):
            if match_input_resolution:
                size = (image.height, image.width)
                labels = _resize(labels[None].float(), size, "nearest")[0].to(labels.dtype)
                gray = _resize(gray[None], size, "bilinear")[0]
                uncertainty = _resize(uncertainty[None], size, "bilinear")[0]
            labels = labels.cpu().numpy()
            counts = np.bincount(labels.ravel(), minlength=len(classes))
            output.labels.append(labels)
            output.gray.append(gray.cpu().float().numpy())
            output.uncertainty.append(uncertainty.clamp(0, 1).cpu().float().numpy())
            output.class_fractions.append(
                {name: float(counts[k]) / labels.size for k, name in enumerate(classes)}
            )
        return output

    def _preprocess(
        self, image: Image.Image, resolution: int
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """RGB image -> (1, 3, H', W') in [-1, 1]: long edge = resolution, aspect kept, then
        edge-padded to the latent multiple. Also returns the size before padding, which is
        what the decoded maps are cropped back to."""
        size = (image.height, image.width)
        if resolution > 0:
            scale = resolution / max(image.width, image.height)
            size = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
        self._check_fits(image, size, resolution)
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
        pixels = torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0
        if size != (image.height, image.width):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)
        multiple = self.latent_multiple
        height, width = pixels.shape[-2:]
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode="replicate")
        return pixels.to(device=self.device, dtype=self.vae.dtype), (height, width)

    def _check_fits(self, image: Image.Image, size: tuple[int, int], resolution: int) -> None:
        """Refuse, before allocating, a processing size whose VAE activations for a single
        ensemble member (a few maps of the VAE's first width at full size) cannot fit."""
        height, width = (side + (-side) % self.latent_multiple for side in size)
        channels = self.vae.config.block_out_channels[0]
        needed = 3 * height * width * channels * self.vae.dtype.itemsize
        setting = f"processing_resolution {resolution}" if resolution else "native resolution"
        check_fits(
            needed,
            self.device,
            f"segmenting a {image.width}x{image.height} image at {setting} ({width}x{height} "
            "pixels)",
            "lower processing_resolution (--processing-res on the command line; 0 means the "
            "image's own size).",
        )

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            latent = self.vae.encode(pixels).latent_dist.mode()
        return (latent * self.vae.config.scaling_factor).to(pixels.dtype)

    def _segment_vocabulary(
        self, image_latents: list[torch.Tensor], classes: list[str], runs: list["_Run"]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(labels, gray, uncertainty) of each image over the whole vocabulary; more classes
        than one pass holds take two passes.

        Pass 1 segments each chunk of ``max_classes_per_pass`` classes on its own; every class
        that covers at least FOUND_FRACTION of an image in its chunk goes to that image's pass
        2, which segments it once more with just those classes (the largest ones first if they
        still overflow a pass). Labels of pass 2 are mapped back to vocabulary indices.
        """
        per_pass = runs[0].max_classes_per_pass
        if len(classes) <= per_pass:
            return self._segment(image_latents, classes, runs)
        found: list[dict[int, float]] = [{} for _ in runs]
        for start in range(0, len(classes), per_pass):
            chunk = classes[start : start + per_pass]
            for found_here, (labels, _, _) in zip(
                found, self._segment(image_latents, chunk, runs), strict=True
            ):
                fractions = torch.bincount(labels.flatten().long(), minlength=len(chunk))
                fractions = fractions[: len(chunk)].float() / labels.numel()
                for k, fraction in enumerate(fractions.tolist()):
                    if fraction >= FOUND_FRACTION:
                        found_here[start + k] = fraction
        results = []
        for image_latent, run, found_here in zip(image_latents, runs, found, strict=True):
            kept = sorted(sorted(found_here, key=found_here.get, reverse=True)[:per_pass])
            if not kept:
                height, width = run.valid_size
                dtype = depth_coding.label_dtype(len(classes))
                none = np.full((height, width), depth_coding.none_label(dtype), dtype=dtype)
                zeros = torch.zeros(height, width)
                results.append((torch.from_numpy(none), zeros, zeros))
                continue
            [(labels, gray, uncertainty)] = self._segment(
                [image_latent], [classes[k] for k in kept], [run]
            )
            labels = depth_coding.recode(labels.numpy(), dict(enumerate(kept)), len(classes))
            results.append((torch.from_numpy(labels), gray, uncertainty))
        return results

    def _segment(
        self, image_latents: list[torch.Tensor], classes: list[str], runs: list["_Run"]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One pass over at most 255 classes for images of one latent size: every member of
        every image denoised together, decoded, and each image's members vote."""
        num_classes = len(classes)
        depth_coding.check_num_classes(num_classes)
        embeddings = self.class_embedder(classes)
        orders, noise, condition = [], [], []
        for image_latent, run in zip(image_latents, runs, strict=True):
            run_orders = run.class_orders(num_classes, self.device)
            orders.append(run_orders)
            # Member by member, so that the noise does not depend on the batch size.
            shape = (1, self.unet.config.out_channels, *image_latent.shape[-2:])
            noise += [
                randn_tensor(shape, generator=run.generator, device=self.device,
                             dtype=image_latent.dtype)
                for _ in run_orders
            ]  # fmt: skip
            condition.append(image_latent.expand(len(run_orders), -1, -1, -1))
        context, mask = self.cam([embeddings[order] for member in orders for order in member])
        latents = self._denoise(torch.cat(condition), context, mask, torch.cat(noise), runs[0])
        gray = self._in_batches(
            "decode", latents.shape, runs[0].batch_size,
            lambda part: self._decode_gray(latents[part]),
        )  # fmt: skip
        results, start = [], 0
        for run, run_orders in zip(runs, orders, strict=True):
            height, width = run.valid_size
            member_gray = gray[start : start + len(run_orders), :height, :width]
            results.append(self._vote(member_gray, run_orders, num_classes))
            start += len(run_orders)
        return results

    def _vote(
        self, member_gray: torch.Tensor, orders: list[torch.Tensor], num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(labels, gray of the members in class-list order, uncertainty) of one image."""
        votes = torch.zeros(num_classes + 1, *member_gray.shape[1:], device=self.device)
        gray_sum = torch.zeros(member_gray.shape[1:], device=self.device)
        gray_count = 0
        for order, gray in zip(orders, member_gray, strict=True):
            local = depth_coding.decode(gray, num_classes).long()
            # Local index k under this member's order is class order[k]; none votes in the
            # extra last row.
            is_none = local == depth_coding.NONE_LABEL
            index = torch.where(is_none, num_classes, order[local.clamp(max=num_classes - 1)])
            votes.scatter_add_(0, index[None], torch.ones_like(votes[:1]))
            if torch.equal(order, orders[0]):
                gray_sum += gray
                gray_count += 1
        share, winner = votes.max(dim=0)
        labels = torch.where(winner == num_classes, depth_coding.NONE_LABEL, winner).to(torch.uint8)
        uncertainty = 1.0 - share / len(orders)
        return labels.cpu(), (gray_sum / gray_count).cpu(), uncertainty.cpu()

    def _denoise(
        self,
        condition: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor,
        latents: torch.Tensor,
        run: "_Run",
    ) -> torch.Tensor:
        """DDIM from ``latents`` (noise), one member per row of every input."""
        self.scheduler.set_timesteps(run.steps, device=self.device)
        padded = not bool(mask.all())  # with no padded token, attention runs unmasked: faster
        for t in self.scheduler.timesteps:

            def predict(part: slice, t=t, latents: torch.Tensor = latents) -> torch.Tensor:
                unet_input = torch.cat([condition[part], latents[part]], dim=1)
                with self._autocast():
                    prediction = self.unet(
                        unet_input, t, encoder_hidden_states=context[part],
                        encoder_attention_mask=mask[part] if padded else None,
                    ).sample  # fmt: skip
                return prediction.to(latents.dtype)

            prediction = self._in_batches("unet", latents.shape, run.batch_size, predict)
            latents = self.scheduler.step(prediction, t, latents).prev_sample
        return latents

    def _decode_gray(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> gray maps on the 0..255 scale (mean of the 3 decoded channels)."""
        with self._autocast():
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return ((decoded.float().mean(dim=1) + 1.0) * 127.5).clamp(0, 255)

    def _in_batches(
        self,
        kind: str,
        shape: torch.Size,
        batch_size: int,
        call: Callable[[slice], torch.Tensor],
    ) -> torch.Tensor:
        """``call(rows)`` over the ``shape[0]`` rows of a ``kind`` of work ("encode", "unet" or
        "decode"), ``batch_size`` rows at a time (0: `_fastest_batch_size`), concatenated."""
        batch_size = batch_size or self._fastest_batch_size(kind, shape)
        return torch.cat([call(slice(i, i + batch_size)) for i in range(0, shape[0], batch_size)])

    def _fastest_batch_size(self, kind: str, shape: torch.Size) -> int:
        """The batch size that runs fastest on this device, by a rule fixed from measurements
        (benchmarks/README.md) rather than timed at run time, so that a result never depends
        on the machine's load.

        CUDA: as many rows as free memory holds (estimated from the UNet width and latent
        size, with a safety margin); the VAE takes the UNet's batch. CPU: the VAE one image at
        a time (its full-resolution convolutions gain nothing from a batch and lose the cache:
        the tiny decoder at 128 px takes 0.027 s per image alone, 0.037 s in a batch of 10),
        a small UNet every row at once (tiny UNet at 128 px: 0.023 s per sample alone, 0.012
        s in a batch of 10), a UNet as wide as SD2's (320 channels) one row at a time, as a
        batch of 2 was slower than two calls of 1 there.
        """
        rows = shape[0]
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            latent_pixels = shape[-2] * shape[-1]
            width = self.unet.config.block_out_channels[0]
            bytes_per_member = 48 * latent_pixels * width * self.unet.dtype.itemsize
            return int(max(1, min(rows, free * 0.6 // max(bytes_per_member, 1))))
        if kind == "unet" and self.unet.config.block_out_channels[0] <= CPU_BATCHED_UNET_WIDTH:
            return rows
        return 1


@dataclass
class _Run:
    """Settings shared by every pass over one image."""

    steps: int
    members: int
    batch_size: int
    permute_classes: bool
    generator: torch.Generator | None
    valid_size: tuple[int, int]
    max_classes_per_pass: int

    def class_orders(self, num_classes: int, device: torch.device) -> list[torch.Tensor]:
        identity = torch.arange(num_classes)
        orders = [identity]
        for _ in range(self.members - 1):
            shuffled = torch.randperm(num_classes, generator=self.generator)
            orders.append(shuffled if self.permute_classes else identity)
        return [order.to(device) for order in orders]


def _same_size_groups(shapes: list[torch.Size]) -> list[list[int]]:
    """Indices of the images, grouped by padded processing size (first-seen order)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    return list(groups.values())


def _resize(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[None].float(), size=size, mode=mode)[0]
