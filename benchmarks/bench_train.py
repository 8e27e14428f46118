"""Training speed: samples per second and peak memory of segdiff's training step.

One step is segdiff's own (``segdiff.training.objective``): the frozen VAE encodes image and
depth-coded mask, noise is added to the mask latent at random timesteps, the UNet (8 input
channels, CAM class tokens as context) predicts v, the MSE against the true v is
backpropagated, and AdamW updates UNet and CAM. Data loading is left out: one synthetic
shapes batch is made once and reused. Each
precision asked for is a separate copy of the trainable parts with its own optimizer; they
are timed in turn (A/B/A/B) and medians are reported.

    python benchmarks/bench_train.py --recipe recipes/tiny-shapes.yaml --threads 1   # CPU
    python benchmarks/bench_train.py --recipe recipes/sd2-cocostuff.yaml --precision fp32 bf16
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _common import (
    DEFAULT_RESOLUTION,
    DTYPES,
    SIZES,
    build_components,
    format_mib,
    interleaved,
    machine_line,
    parameter_mib,
    pick_device,
    set_threads,
)

from segdiff import depth_coding
from segdiff.data.shapes import generate_sample
from segdiff.model.text import ClassEmbedder
from segdiff.recipes import NoiseRecipe, load_recipe
from segdiff.training.objective import Denoiser, diffusion_loss, encode_pair
from segdiff.vocabularies import SHAPES_CLASSES


class Trainer:
    """segdiff's training step (the objective of ``segdiff.training``) at one precision, on
    its own ``components`` (it takes them over) with its own AdamW.

    Mixed precision is applied as ``segdiff train`` gets it from accelerate: frozen VAE and
    text encoder cast to the precision, the trainable UNet + CAM kept fp32 under autocast,
    and loss scaling for fp16."""

    def __init__(
        self, components: dict, precision: str, device: torch.device, args: argparse.Namespace
    ):
        dtype = DTYPES[precision]
        for name in ("vae", "text_encoder"):
            components[name].requires_grad_(False).eval().to(device, dtype=dtype)
        self.vae = components["vae"]
        self.embedder = ClassEmbedder(components["tokenizer"], components["text_encoder"])
        unet = components["unet"].train()
        if args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.denoiser = Denoiser(unet, components["cam"].train()).to(device)
        self.scheduler = components["scheduler"]
        self.optimizer = torch.optim.AdamW(self.denoiser.parameters(), lr=1e-5)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.noise = args.noise
        self.autocast = {
            "device_type": device.type,
            "dtype": dtype,
            "enabled": dtype != torch.float32,
        }
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(self, pixels: torch.Tensor, masks: torch.Tensor, classes: list[list[str]]) -> float:
        image_latents, mask_latents = encode_pair(self.vae, pixels, masks)
        embeddings = [self.embedder(names) for names in classes]
        with torch.autocast(**self.autocast):
            loss = diffusion_loss(
                self.denoiser,
                self.scheduler,
                image_latents,
                mask_latents,
                embeddings,
                self.generator,
                self.noise,
            )
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.denoiser.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def resident_mib(self) -> float:
        """Trainable weights plus optimizer state (both AdamW moments)."""
        state = self.optimizer.state.values()
        moments = sum(t.numel() * t.element_size() for s in state for t in s.values()) / 2**20
        return parameter_mib(self.denoiser) + moments


def training_batch(size: int, resolution: int, device: torch.device, dtype: torch.dtype):
    """Shapes images and masks depth-coded for a shuffled class list, in [-1, 1]."""
    rng = np.random.default_rng(0)
    pixels, masks, classes = [], [], []
    for index in range(size):
        image, labels = generate_sample((3, index), resolution)
        order = rng.permutation(len(SHAPES_CLASSES))
        position = np.argsort(order)  # class c is drawn at level position[c]
        gray = depth_coding.encode(position[labels].astype(np.uint8), len(SHAPES_CLASSES))
        pixels.append(torch.from_numpy(image).permute(2, 0, 1).float())
        masks.append(torch.from_numpy(gray).float().expand(3, -1, -1))
        classes.append([SHAPES_CLASSES[c] for c in order])

    def to_unit_range(tensors: list[torch.Tensor]) -> torch.Tensor:
        return (torch.stack(tensors) / 127.5 - 1).to(device=device, dtype=dtype)

    return to_unit_range(pixels), to_unit_range(masks), classes


PRECISIONS = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
"""A recipe's train.mixed_precision -> this script's precision name."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe", type=Path,
        help="training recipe: model size, crop, batch, precision, gradient checkpointing and "
        "noise come from it (the flags below override it)",
    )  # fmt: skip
    parser.add_argument("--size", choices=SIZES, help="without --recipe (default: tiny)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--precision", nargs="+", choices=list(DTYPES),
        help="mixed precisions to compare (default: the recipe's, else fp32)",
    )  # fmt: skip
    parser.add_argument("--resolution", type=int, help="training crop side in pixels")
    parser.add_argument("--batch-size", type=int, help="samples per step (default: 4)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe) if args.recipe else None
    if recipe is None:
        args.size = args.size or "tiny"
        args.tiny_overrides, args.noise = None, NoiseRecipe()
        args.precision = args.precision or ["fp32"]
        args.batch_size = args.batch_size or 4
        args.resolution = args.resolution or DEFAULT_RESOLUTION[args.size]
        return args
    if args.size:
        parser.error("--size comes from the recipe; give one or the other")
    args.size = "sd2" if recipe.model.kind == "stable-diffusion" else "tiny"
    args.tiny_overrides, args.noise = recipe.model.tiny, recipe.train.noise
    args.precision = args.precision or [PRECISIONS[recipe.train.mixed_precision]]
    args.batch_size = args.batch_size or recipe.train.batch_size
    args.resolution = args.resolution or recipe.data.resolution
    args.gradient_checkpointing |= recipe.train.gradient_checkpointing
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    torch.manual_seed(0)
    trainers = {
        precision: Trainer(
            build_components(args.size, 0, args.tiny_overrides), precision, device, args
        )
        for precision in args.precision
    }  # the same seed: the same weights for every precision
    pixels, masks, classes = training_batch(args.batch_size, args.resolution, device, torch.float32)

    for trainer in trainers.values():  # warm-up; allocates the optimizer state
        trainer.step(pixels, masks, classes)

    def runner(trainer: Trainer):
        def run(_: int) -> None:
            for _ in range(args.steps):
                trainer.step(pixels, masks, classes)

        return run

    results = interleaved({p: runner(t) for p, t in trainers.items()}, args.rounds, device)
    source = f"recipe {args.recipe}" if args.recipe else f"--size {args.size}"
    print(f"# bench_train, {source}: random weights, the step of segdiff.training.objective")
    print(
        f"machine: {machine_line(device)}\n"
        f"batch {args.batch_size} of {args.resolution}x{args.resolution}, {args.steps} steps "
        f"per round, {args.rounds} rounds, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}, multi-resolution noise "
        f"{args.noise.multires_iterations} levels; plain AdamW (no 8-bit)\n"
    )
    header = ["precision", "s/step", "samples/s", "resident MiB", "peak MiB above resident"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = {}
    for precision, measurement in results.items():
        seconds = measurement.median_seconds / args.steps
        resident = trainers[precision].resident_mib()
        rows[precision] = {
            "seconds_per_step": seconds,
            "samples_per_second": args.batch_size / seconds,
            "resident_mib": resident,
            "peak_mib": measurement.max_peak_mib,
        }
        cells = [
            precision,
            f"{seconds:.3f}",
            f"{args.batch_size / seconds:.2f}",
            f"{resident:,.0f}",
            format_mib(measurement.max_peak_mib),
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
