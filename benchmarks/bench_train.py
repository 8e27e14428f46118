"""Training speed: samples per second and peak memory of segdiff's training step.

The step timed is segdiff's own, `segdiff.training.step.TrainingStep`, the one `segdiff train`
repeats: the frozen VAE encodes image and depth-coded mask, noise is added to the mask latent
at random timesteps, the UNet (8 input channels, CAM class tokens as context) predicts v, the
MSE against the true v is backpropagated through accelerate, and the optimizer updates UNet
and CAM (EMA too when the recipe turns it on). Data loading is left out: one synthetic shapes
batch is made once and reused. accelerate fixes one mixed precision per process, so each
precision asked for runs in a process of its own with its own copy of the model; they are
timed in turn (A/B/A/B), each measuring its own time and memory, and medians are reported.

Model FLOP utilisation (MFU) is printed beside samples/s: the UNet's forward FLOPs per sample
(torch's FlopCounterMode on one forward at the training latent size, on the meta device, a
multiply-add counting 2), times 3 for forward + backward (the backward pass costs about twice
the forward), times samples/s, over the device's peak as measured here by a large matrix
product (bf16 on a GPU, fp32 on a CPU). The VAE encode, the CAM and the optimizer are left out
of the FLOPs, as is usual, so the MFU is a floor.

    python benchmarks/bench_train.py --recipe recipes/tiny-shapes.yaml --threads 1   # CPU
    python benchmarks/bench_train.py --recipe recipes/sd2-cocostuff.yaml --precision fp32 bf16
"""

import argparse
import dataclasses
import json
import multiprocessing
import time
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
from torch.utils.flop_counter import FlopCounterMode

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
    step([batch])  # warm-up (compilation too); allocates the optimizer state
    connection.send((resident_mib(step), step.denoiser.unet.is_gradient_checkpointing))
    while connection.recv():
        sample, _ = measure(lambda: [step([batch]) for _ in range(args.steps)], device)
        connection.send(sample)


FORWARD_AND_BACKWARD = 3
"""Training FLOPs per forward FLOP: the forward, and a backward costing two (input and weight
gradients)."""


def unet_forward_flops(args: argparse.Namespace) -> float:
    """FLOPs of one UNet forward per sample at the training latent size, with the benchmark
    batch's class tokens as context; counted on the meta device, so nothing is computed."""
    with torch.device("meta"):
        components = build_components(args.size, 0, args.train_recipe.model.tiny or None)
        unet = components["unet"]
        factor = 2 ** (len(components["vae"].config.block_out_channels) - 1)
        side = args.resolution // factor
        sample = torch.zeros(1, unet.config.in_channels, side, side)
        context = torch.zeros(1, len(SHAPES_CLASSES), unet.config.cross_attention_dim)
        timestep = torch.tensor(500)
    with FlopCounterMode(display=False) as counter:
        unet(sample, timestep, encoder_hidden_states=context)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, seconds: float = 1.0) -> tuple[float, str]:
    """(the best FLOP/s of a square matrix product, its dtype): bf16 at 8192 on CUDA, fp32 at
    2048 on a CPU (with this process's torch threads), the best of ``seconds`` of repeats."""
    dtype, side = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 2048)
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best, spent = float("inf"), 0.0
    while spent < seconds:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * side**3 / best, "bf16" if dtype == torch.bfloat16 else "fp32"


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
    parser.add_argument(
        "--gradient-checkpointing", choices=["true", "false", "auto"],
        help="default: the recipe's (auto: off when a trial step fits in free GPU memory)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", choices=["true", "false", "regional"], help="default: the recipe's"
    )
    parser.add_argument("--channels-last", choices=["true", "false"], help="default: the recipe's")
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
    words = {"true": True, "false": False}
    train = dataclasses.replace(
        recipe.train,
        **{
            key: words.get(value, value)
            for key, value in (
                ("gradient_checkpointing", args.gradient_checkpointing),
                ("compile", args.compile),
                ("channels_last", args.channels_last),
            )
            if value is not None
        },
    )
    args.train_recipe = dataclasses.replace(
        recipe, train=train, optim=dataclasses.replace(recipe.optim, eight_bit=False)
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
    resident, checkpointing = {}, {}
    for precision, connection in connections.items():
        resident[precision], checkpointing[precision] = connection.recv()

    def runner(connection: Connection):
        def run(_: int) -> Sample:
            connection.send(True)
            return connection.recv()

        return run

    results = interleaved({p: runner(c) for p, c in connections.items()}, args.rounds, device)
    for connection in connections.values():
        connection.send(False)
    flops_per_sample = FORWARD_AND_BACKWARD * unet_forward_flops(args)
    peak, peak_dtype = matmul_peak(device)
    recipe = args.train_recipe
    source = f"recipe {args.recipe}" if args.recipe else f"--size {args.size}"
    decided = ", ".join(f"{p}: {'on' if on else 'off'}" for p, on in checkpointing.items())
    print(f"# bench_train, {source}: random weights, segdiff.training.step.TrainingStep")
    print(
        f"machine: {machine_line(device)}\n"
        f"batch {args.batch_size} of {args.resolution}x{args.resolution}, {args.steps} steps "
        f"per round, {args.rounds} rounds, gradient checkpointing "
        f"{recipe.train.gradient_checkpointing} ("
        f"{decided}), "
        f"compile {recipe.train.compile}, channels-last {recipe.train.channels_last}, "
        "multi-resolution noise "
        f"{recipe.train.noise.multires_iterations} levels, EMA "
        f"{'on' if recipe.train.ema.enabled else 'off'}; plain AdamW (no 8-bit)\n"
        f"UNet forward + backward: {flops_per_sample / 1e9:,.2f} GFLOP/sample (3x the forward); "
        f"measured {peak_dtype} matmul peak {peak / 1e12:,.3f} TFLOP/s\n"
    )
    header = ["precision", "s/step", "samples/s", "TFLOP/s", f"MFU (of {peak_dtype} peak)"]
    header += ["resident MiB", "peak MiB above resident"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    rows = {}
    for precision, measurement in results.items():
        seconds = measurement.median_seconds / args.steps
        rows[precision] = {
            "seconds_per_step": seconds,
            "samples_per_second": args.batch_size / seconds,
            "tflops": args.batch_size / seconds * flops_per_sample / 1e12,
            "mfu": args.batch_size / seconds * flops_per_sample / peak,
            "resident_mib": resident[precision],
            "peak_mib": measurement.max_peak_mib,
        }
        cells = [
            precision,
            f"{seconds:.3f}",
            f"{args.batch_size / seconds:.2f}",
            f"{rows[precision]['tflops']:.3f}",
            f"{100 * rows[precision]['mfu']:.1f}%",
            f"{resident[precision]:,.0f}",
            format_mib(measurement.max_peak_mib),
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "flops_per_sample": flops_per_sample,
            "peak_flops": peak,
            "peak_dtype": peak_dtype,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
