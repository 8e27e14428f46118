"""Training speed: samples per second and peak memory of segdiff's training step.

The step timed is segdiff's own, `segdiff.training.step.TrainingStep`, the one `segdiff train`
repeats: the frozen VAE encodes image and depth-coded mask, noise is added to the mask latent
at random timesteps, the UNet (8 input channels, CAM class tokens as context) predicts v, the
MSE against the true v is backpropagated through accelerate, and the optimizer updates UNet
and CAM (EMA too when the recipe turns it on). Data loading is left out: one synthetic shapes
batch is made once and reused. accelerate fixes one mixed precision per process, so each
precision asked for runs in a process of its own with its own copy of the model; they are
timed in turn (A/B/A/B), each measuring its own time and memory, and medians are reported.

    python benchmarks/bench_train.py --recipe recipes/tiny-shapes.yaml --threads 1   # CPU
    python benchmarks/bench_train.py --recipe recipes/sd2-cocostuff.yaml --precision fp32 bf16
"""

import argparse
import dataclasses
import json
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch
from _common import (
    DEFAULT_RESOLUTION,
    DTYPES,
    SIZES,
    Sample,
    build_components,
    format_mib,
    interleaved,
    machine_line,
    measure,
    parameter_mib,
    pick_device,
    set_threads,
)
from accelerate import Accelerator

from segdiff import depth_coding
from segdiff.data.shapes import generate_sample
from segdiff.recipes import Recipe, load_recipe
from segdiff.training.batches import Batch
from segdiff.training.step import TrainingStep
from segdiff.vocabularies import SHAPES_CLASSES


def training_batch(size: int, resolution: int) -> Batch:
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
        return torch.stack(tensors) / 127.5 - 1

    return Batch(to_unit_range(pixels), to_unit_range(masks), classes)


def resident_mib(step: TrainingStep) -> float:
    """Trainable weights plus optimizer state (both AdamW moments) and EMA weights."""
    state = step.optimizer.state.values()
    moments = sum(t.numel() * t.element_size() for s in state for t in s.values()) / 2**20
    ema = 0.0
    if step.ema is not None:
        ema = sum(p.numel() * p.element_size() for p in step.ema.shadow_params) / 2**20
    return parameter_mib(step.denoiser) + moments + ema


def serve(precision: str, args: argparse.Namespace, connection: Connection) -> None:
    """One precision's process: build its TrainingStep, warm it up, send its resident memory,
    then time ``args.steps`` steps for every request until told to stop."""
    set_threads(args.threads)
    torch.manual_seed(0)  # the same weights for every precision
    device = pick_device(args.device)
    accelerator = Accelerator(mixed_precision=MIXED_PRECISION[precision], cpu=device.type == "cpu")
    components = build_components(args.size, 0, args.train_recipe.model.tiny or None)
    step = TrainingStep.from_recipe(components, args.train_recipe, accelerator)
    batch = training_batch(args.batch_size, args.resolution).to(accelerator.device)
    step([batch])  # warm-up; allocates the optimizer state
    connection.send(resident_mib(step))
    while connection.recv():
        sample, _ = measure(lambda: [step([batch]) for _ in range(args.steps)], device)
        connection.send(sample)


PRECISIONS = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
"""A recipe's train.mixed_precision -> this script's precision name."""
MIXED_PRECISION = {name: mixed for mixed, name in PRECISIONS.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe", type=Path,
        help="training recipe: model size, crop, batch, precision, gradient checkpointing and "
        "noise come from it (the flags below override it)",
    )  # fmt: skip
    parser.add_argument("--size", choices=SIZES, help="without --recipe (default: tiny)")
    parser.add_argument(
        "--device",
        help="cpu or cuda (default: cuda when available; pick a GPU with CUDA_VISIBLE_DEVICES)",
    )
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
    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    if args.recipe is None:
        args.size = args.size or "tiny"
        args.precision = args.precision or ["fp32"]
        args.batch_size = args.batch_size or 4
        args.resolution = args.resolution or DEFAULT_RESOLUTION[args.size]
    else:
        if args.size:
            parser.error("--size comes from the recipe; give one or the other")
        args.size = "sd2" if recipe.model.kind == "stable-diffusion" else "tiny"
        args.precision = args.precision or [PRECISIONS[recipe.train.mixed_precision]]
        args.batch_size = args.batch_size or recipe.train.batch_size
        args.resolution = args.resolution or recipe.data.resolution
    train = recipe.train
    args.gradient_checkpointing |= train.gradient_checkpointing
    args.train_recipe = dataclasses.replace(
        recipe,
        train=dataclasses.replace(train, gradient_checkpointing=args.gradient_checkpointing),
        optim=dataclasses.replace(recipe.optim, eight_bit=False),
    )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)  # as in the workers, for the machine line
    context = multiprocessing.get_context("spawn")
    connections = {}
    for precision in args.precision:
        here, there = context.Pipe()
        context.Process(target=serve, args=(precision, args, there), daemon=True).start()
        connections[precision] = here
    resident = {precision: c.recv() for precision, c in connections.items()}

    def runner(connection: Connection):
        def run(_: int) -> Sample:
            connection.send(True)
            return connection.recv()

        return run

    results = interleaved({p: runner(c) for p, c in connections.items()}, args.rounds, device)
    for connection in connections.values():
        connection.send(False)
    recipe = args.train_recipe
    source = f"recipe {args.recipe}" if args.recipe else f"--size {args.size}"
    print(f"# bench_train, {source}: random weights, segdiff.training.step.TrainingStep")
    print(
        f"machine: {machine_line(device)}\n"
        f"batch {args.batch_size} of {args.resolution}x{args.resolution}, {args.steps} steps "
        f"per round, {args.rounds} rounds, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}, multi-resolution noise "
        f"{recipe.train.noise.multires_iterations} levels, EMA "
        f"{'on' if recipe.train.ema.enabled else 'off'}; plain AdamW (no 8-bit)\n"
    )
    header = ["precision", "s/step", "samples/s", "resident MiB", "peak MiB above resident"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = {}
    for precision, measurement in results.items():
        seconds = measurement.median_seconds / args.steps
        rows[precision] = {
            "seconds_per_step": seconds,
            "samples_per_second": args.batch_size / seconds,
            "resident_mib": resident[precision],
            "peak_mib": measurement.max_peak_mib,
        }
        cells = [
            precision,
            f"{seconds:.3f}",
            f"{args.batch_size / seconds:.2f}",
            f"{resident[precision]:,.0f}",
            format_mib(measurement.max_peak_mib),
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
