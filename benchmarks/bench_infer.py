"""Inference speed (and optionally accuracy): segdiff's pipeline against the original loop.

Both run on the same weights, ensemble size and steps, on the same pixels (square test images
of each processing resolution, so that segdiff's aspect-kept resize and the baseline's squash
give the same input), in one process, timed in turn (A/B/A/B) so that load from other
processes falls on both alike; medians are reported, one row per resolution and setting.

The baseline (``OriginalLoop``) rebuilds the original implementation's inference loop on
segdiff's components: ensemble members one at a time, the image re-encoded by the VAE and the
class prompts re-encoded by the text encoder for every member, fp32, diffusers' default
attention processor, DDIM with "leading" timestep spacing, the input squashed to a square.
Its decoding and vote are segdiff's (depth levels, per-pixel majority), so accuracy
differences come from the loop's settings alone and not from the original's decoding defects
(docs/method.md), which cost no time.

    python benchmarks/bench_infer.py --threads 1           # tiny, CPU: 64, 128, 256 px, 10x10
    python benchmarks/bench_infer.py --threads 1 --data D  # with mIoU on a prepared shapes split
    python benchmarks/bench_infer.py --table --data D      # preset table with mIoU on shapes
    python benchmarks/bench_infer.py --size sd2 --dtype fp16 --device cuda
"""

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    DTYPES,
    SIZES,
    Measurement,
    build_components,
    format_mib,
    interleaved,
    machine_line,
    parameter_mib,
    pick_device,
    set_threads,
)
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from segdiff import depth_coding
from segdiff.data.shapes import generate_sample
from segdiff.model import default_model_path
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.model.text import ClassEmbedder
from segdiff.vocabularies import get_vocabulary

ORIGINAL_DEFAULT = (50, 10)
"""The original implementation's default: 50 DDIM steps ("leading") x 10 ensemble members."""

AUTOCAST = "bf16-autocast"
"""segdiff with fp32 weights under bf16 autocast (`SegDiffPipeline.enable_bf16_autocast`)."""

DEFAULT_RESOLUTIONS = {"tiny": [64, 128, 256], "sd2": [768]}

FAST_PRESETS = {
    "fast-2x10": (2, 10), "fast-4x3": (4, 3), "fast-2x3": (2, 3),
    "fast-1x20": (1, 20), "fast-1x10": (1, 10), "fast-1x1": (1, 1),
}  # fmt: skip
"""Candidate fast settings (steps, ensemble members), all with trailing spacing."""


@dataclass(frozen=True)
class Setting:
    name: str
    method: str
    """"baseline" (OriginalLoop) or "segdiff" (SegDiffPipeline)."""
    steps: int
    ensemble: int
    resolution: int
    dtype: str = "fp32"


@dataclass
class Row:
    setting: Setting
    seconds_per_image: float
    cpu_seconds_per_image: float
    peak_mib: float | None
    miou: float | None = None


class OriginalLoop:
    """The original inference loop on segdiff's components, for measurement only."""

    def __init__(self, pipe: SegDiffPipeline):
        self.pipe = pipe
        self.scheduler = DDIMScheduler.from_config(
            pipe.scheduler.config, timestep_spacing="leading"
        )

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        classes: list[str],
        steps: int,
        ensemble: int,
        resolution: int,
        generator: torch.Generator,
    ) -> np.ndarray:
        """Labels at the input size (class index, 255 = none)."""
        pipe = self.pipe
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
        pixels = torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0
        pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear")
        pixels = pixels.to(device=pipe.device, dtype=pipe.vae.dtype)
        member_labels = []
        for _ in range(ensemble):
            image_latent = pipe._encode(pixels)
            # A fresh embedder has an empty cache: the prompts go through the encoder again.
            embedder = ClassEmbedder(pipe.tokenizer, pipe.text_encoder, pipe.config.prompt_template)
            context, mask = pipe.cam([embedder(classes)])
            latents = randn_tensor(
                image_latent.shape, generator=generator, device=pipe.device, dtype=pipe.unet.dtype
            )
            self.scheduler.set_timesteps(steps, device=pipe.device)
            for t in self.scheduler.timesteps:
                unet_input = torch.cat([image_latent, latents], dim=1)
                prediction = pipe.unet(
                    unet_input, t, encoder_hidden_states=context, encoder_attention_mask=mask
                ).sample
                latents = self.scheduler.step(prediction, t, latents).prev_sample
            gray = pipe._decode_gray(latents)[0]
            member_labels.append(depth_coding.decode(gray, len(classes)).long())
        labels = torch.stack(member_labels).mode(dim=0).values.float()
        labels = F.interpolate(labels[None, None], size=(image.height, image.width))
        return labels[0, 0].to(torch.uint8).cpu().numpy()


def load_pipelines(args: argparse.Namespace, device: torch.device):
    """(fp32 pipeline for the baseline, {dtype: segdiff's pipeline with the speed options
    asked for}, a note on where the weights come from)."""
    if args.size == "sd2":
        pipe = SegDiffPipeline(**build_components("sd2"), default_processing_resolution=768)
        note = "SD2 (768-v) architecture with random weights"
    else:
        model = args.model or default_model_path()
        if model is None:
            pipe = SegDiffPipeline(**build_components("tiny"), default_processing_resolution=64)
            note = "tiny architecture with random weights (no bundled model installed)"
        else:
            pipe = SegDiffPipeline.from_pretrained(model)
            note = f"trained model {model}"
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    fast = {}
    for dtype in args.dtype:
        fast[dtype] = copy.deepcopy(pipe)
        if dtype == AUTOCAST:
            fast[dtype].enable_bf16_autocast()
        else:
            fast[dtype].to(dtype=DTYPES[dtype])
        if args.channels_last:
            fast[dtype].unet.to(memory_format=torch.channels_last)
            fast[dtype].vae.to(memory_format=torch.channels_last)
        if args.compile:
            fast[dtype].unet.compile()
    # The baseline attends as the original did: diffusers' default processor everywhere.
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    return pipe, fast, note


def test_images(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """Synthetic shapes images of ``size`` (width, height), seeded."""
    width, height = size
    images = []
    for index in range(count):
        array, _ = generate_sample((7, index), max(width, height))
        images.append(Image.fromarray(array[:height, :width]))
    return images


def segdiff_name(dtype: str, steps: int, members: int) -> str:
    return f"segdiff-{steps}x{members}" if dtype == "fp32" else f"segdiff-{dtype}-{steps}x{members}"


def settings_to_run(
    args: argparse.Namespace, pipe: SegDiffPipeline, resolution: int
) -> list[Setting]:
    steps, members, first = args.steps, args.ensemble, args.dtype[0]
    rows = [Setting(f"baseline-{steps}x{members}", "baseline", steps, members, resolution)]
    if args.table:
        default_steps, default_members = ORIGINAL_DEFAULT
        rows.insert(0, Setting(f"baseline-{default_steps}x{default_members}", "baseline",
                               default_steps, default_members, resolution))  # fmt: skip
    rows += [
        Setting(segdiff_name(dtype, steps, members), "segdiff", steps, members, resolution, dtype)
        for dtype in args.dtype
    ]
    if not args.table:
        return rows
    default = (pipe.config.default_denoising_steps, pipe.config.default_ensemble_size)
    rows.append(
        Setting(f"segdiff-default-{default[0]}x{default[1]}", "segdiff", *default, resolution,
                first)
    )  # fmt: skip
    rows += [
        Setting(name, "segdiff", *preset, resolution, first)
        for name, preset in FAST_PRESETS.items()
        if preset != default
    ]
    return rows


class Predictor:
    """Runs a Setting: the baseline loop or segdiff's pipeline, at the setting's resolution."""

    def __init__(
        self,
        baseline: OriginalLoop,
        pipes: dict[str, SegDiffPipeline],
        args: argparse.Namespace,
    ):
        self.baseline = baseline
        self.pipes = pipes
        self.batch_size = args.batch_size

    def __call__(
        self, setting: Setting, image: Image.Image, classes: list[str], seed: int
    ) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        if setting.method == "baseline":
            return self.baseline(
                image, classes, setting.steps, setting.ensemble, setting.resolution, generator
            )
        output = self.pipes[setting.dtype](
            image,
            classes,
            num_inference_steps=setting.steps,
            ensemble_size=setting.ensemble,
            processing_resolution=setting.resolution,
            batch_size=self.batch_size,
            generator=generator,
        )
        return output.labels[0]


def measure_speed(
    settings: list[Setting],
    predict: Predictor,
    images: list[Image.Image],
    classes: list[str],
    rounds: int,
    device: torch.device,
) -> tuple[dict[str, Measurement], float]:
    """Seconds per image of every setting, A/B interleaved over ``rounds`` rounds, and the
    seconds the warm-up took (compilation included)."""
    # Warm-up (lazy initialisation, kernel choice, compilation) with one step: the tensor
    # shapes are those of the timed runs, at a fraction of the cost.
    start = time.perf_counter()
    for setting in settings:
        predict(replace(setting, steps=1), images[0], classes, seed=0)
    warmup = time.perf_counter() - start

    def runner(setting: Setting):
        def run(round_index: int) -> None:
            for index, image in enumerate(images):
                predict(setting, image, classes, seed=1000 * round_index + index)

        return run

    results = interleaved({s.name: runner(s) for s in settings}, rounds, device)
    for measurement in results.values():
        measurement.seconds = [t / len(images) for t in measurement.seconds]
        measurement.cpu_seconds = [t / len(images) for t in measurement.cpu_seconds]
    return results, warmup


@dataclass
class UnetSpeed:
    """The UNet forward's speed and FLOPs, and the VAE decode's speed, per sample."""

    seconds_per_sample_batch_1: float
    seconds_per_sample_batch_e: float
    flops_per_sample: float
    """Floating-point operations of one UNet forward (a multiply-add counts 2)."""
    decode_seconds_batch_1: float
    """VAE decode seconds per latent, one at a time and all E at once: what the pipeline's
    device rule for the decode batch size (`_fastest_batch_size`) rests on."""
    decode_seconds_batch_e: float

    @property
    def achieved_tflops(self) -> float:
        return self.flops_per_sample / self.seconds_per_sample_batch_e / 1e12


def unet_speed(pipe: SegDiffPipeline, classes, resolution, args, device) -> UnetSpeed:
    """UNet forward seconds per sample at batch 1 and at batch = ensemble size (medians), and
    its FLOPs per sample as torch's FlopCounterMode counts them (matmuls, convolutions and
    attention)."""
    height = width = resolution // 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    batch = args.ensemble
    channels = pipe.unet.config.in_channels
    sample = torch.randn(batch, channels, height, width, device=device, dtype=pipe.unet.dtype)
    with torch.no_grad():  # FlopCounterMode's module tracker rejects inputs with gradients
        context, mask = pipe.cam([pipe.class_embedder(classes)] * batch)
    timestep = torch.tensor(500, device=device)

    latents = sample[:, : pipe.unet.config.out_channels]

    def forward(size: int, decode: bool = False):
        def run(_: int) -> None:
            with torch.no_grad(), pipe._autocast():
                for start in range(0, batch, size):
                    chunk = slice(start, start + size)
                    if decode:
                        pipe._decode_gray(latents[chunk])
                    else:
                        pipe.unet(
                            sample[chunk], timestep, context[chunk],
                            encoder_attention_mask=mask[chunk],
                        )  # fmt: skip

        return run

    with FlopCounterMode(display=False) as counter:
        forward(batch)(0)
    runners = {"1": forward(1), "E": forward(batch)}
    runners |= {"decode 1": forward(1, decode=True), "decode E": forward(batch, decode=True)}
    results = interleaved(runners, args.rounds, device)
    per_sample = {name: m.median_seconds / batch for name, m in results.items()}
    return UnetSpeed(
        per_sample["1"],
        per_sample["E"],
        counter.get_total_flops() / batch,
        per_sample["decode 1"],
        per_sample["decode E"],
    )


def measure_accuracy(
    settings: list[Setting], predict: Predictor, args: argparse.Namespace
) -> dict[str, float]:
    """mIoU (percent) of every setting on the first ``args.limit`` images of a prepared split,
    scored by segdiff's evaluation code. Image i gets seed i under every setting."""
    from segdiff.data.prepared import open_prepared
    from segdiff.evaluation.benchmarks import get_benchmark
    from segdiff.evaluation.evaluate import evaluate
    from segdiff.imageio import load_rgb

    benchmark = get_benchmark(args.benchmark)
    prepared = open_prepared(args.data, args.split)
    seeds = {name: i for i, name in enumerate(prepared.image_names)}
    classes = list(benchmark.classes)
    scores = {}
    for setting in settings:

        def labels_of(name: str, setting: Setting = setting) -> np.ndarray:
            image = load_rgb(prepared.image_path(name))
            return predict(setting, image, classes, seed=seeds[name])

        result = evaluate(benchmark, prepared, labels_of, limit=args.limit, max_samples=0)
        scores[setting.name] = result.metrics.miou
    return scores


def peak_fraction(unet: UnetSpeed, peak_tflops: float | None) -> str:
    if not peak_tflops:
        return ""
    return f" = {100 * unet.achieved_tflops / peak_tflops:.1f}% of {peak_tflops:g} TFLOP/s peak"


def render_table(rows: list[Row]) -> str:
    """One row per resolution and setting; "x vs" columns compare with the baselines at the
    same resolution."""
    references = list(dict.fromkeys(r.setting.name for r in rows if r.setting.method == "baseline"))
    by_key = {(row.setting.resolution, row.setting.name): row for row in rows}
    header = ["resolution", "setting", "steps x members", "UNet passes/img", "s/img"]
    header += ["CPU s/img", "img/s"] + [f"x vs {name}" for name in references] + ["peak MiB"]
    has_miou = any(row.miou is not None for row in rows)
    if has_miou:
        header.append("mIoU")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        s = row.setting
        cells = [
            str(s.resolution),
            s.name,
            f"{s.steps} x {s.ensemble}",
            str(s.steps * s.ensemble),
            f"{row.seconds_per_image:.3f}",
            f"{row.cpu_seconds_per_image:.3f}",
            f"{1 / row.seconds_per_image:.2f}",
        ]
        cells += [
            f"{by_key[s.resolution, r].seconds_per_image / row.seconds_per_image:.1f}"
            for r in references
        ]
        cells.append(format_mib(row.peak_mib))
        if has_miou:
            cells.append("n/a" if row.miou is None else f"{row.miou:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--model", help="tiny: model folder (default: the bundled model)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype", nargs="+", choices=[*DTYPES, AUTOCAST], default=["fp32", AUTOCAST],
        help=f"segdiff's precisions, one setting each ({AUTOCAST}: fp32 weights under bf16 "
        "autocast, what --half-precision runs on a CPU with native bf16; the baseline is fp32)",
    )  # fmt: skip
    parser.add_argument(
        "--resolution", "--resolutions", dest="resolutions", type=int, nargs="+",
        help="processing resolutions, one table block each (default: tiny 64 128 256, sd2 768)",
    )  # fmt: skip
    parser.add_argument(
        "--image-size", default=None,
        help="WxH of the test images (default: square, of each resolution: equal work; "
        "another aspect gives the baseline, which squashes, other pixels than segdiff)",
    )  # fmt: skip
    parser.add_argument("--vocabulary", default=None, help="class list (default by size)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ensemble", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=0, help="segdiff; 0 = automatic")
    parser.add_argument("--images", type=int, default=2, help="images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--table", action="store_true", help="original default + presets")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="segdiff's UNet and VAE in channels-last, as segdiff's loader puts them",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--data", type=Path, help="prepared dataset: also measure mIoU")
    parser.add_argument("--benchmark", default="shapes")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=40, help="images scored per setting")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--peak-tflops", type=float,
        help="the device's dense peak for --dtype (e.g. 989 for an H100 SXM in bf16): the UNet's "
        "share of it is printed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.resolutions = args.resolutions or DEFAULT_RESOLUTIONS[args.size]
    if args.image_size is not None:
        width, _, height = args.image_size.partition("x")
        args.image_size = (int(width), int(height))
    args.vocabulary = args.vocabulary or ("voc21" if args.size == "sd2" else "shapes")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    set_threads(args.threads)
    torch.manual_seed(0)
    pipe, fast, note = load_pipelines(args, device)
    predict = Predictor(OriginalLoop(pipe), fast, args)
    classes = list(get_vocabulary(args.vocabulary).classes)
    first = fast[args.dtype[0]]

    rows, unets, warmups, seconds_all = [], {}, {}, {}
    for resolution in args.resolutions:
        settings = settings_to_run(args, pipe, resolution)
        images = test_images(args.images, args.image_size or (resolution, resolution))
        speed, warmups[resolution] = measure_speed(
            settings, predict, images, classes, args.rounds, device
        )
        unets[resolution] = unet_speed(first, classes, resolution, args, device)
        accuracy = measure_accuracy(settings, predict, args) if args.data else {}
        for s in settings:
            rows.append(
                Row(
                    s,
                    speed[s.name].median_seconds,
                    speed[s.name].median_cpu_seconds,
                    speed[s.name].max_peak_mib,
                    accuracy.get(s.name),
                )
            )
            seconds_all[f"{resolution}/{s.name}"] = speed[s.name].seconds

    size = "square, of each resolution" if args.image_size is None else "x".join(
        map(str, args.image_size)
    )  # fmt: skip
    print(f"# bench_infer --size {args.size}: {note}")
    print(
        f"machine: {machine_line(device)}\n"
        f"segdiff: {', '.join(args.dtype)}{', channels-last' if args.channels_last else ''}"
        f"{', torch.compile' if args.compile else ''}, batch size {args.batch_size or 'auto'}; "
        f"baseline: fp32; warm-up of all settings "
        f"{', '.join(f'{w:.1f} s' for w in warmups.values())}\n"
        f"images: {args.images} per round ({size}), {args.rounds} rounds, "
        f"{len(classes)} classes ({args.vocabulary}); "
        f"weights {parameter_mib(pipe.unet, pipe.vae, pipe.text_encoder):,.0f} MiB (fp32)"
    )
    for resolution, unet in unets.items():
        print(
            f"UNet forward at {resolution} px ({args.dtype[0]}), s/sample: batch 1 "
            f"{unet.seconds_per_sample_batch_1:.4f}, batch {args.ensemble} "
            f"{unet.seconds_per_sample_batch_e:.4f}; {unet.flops_per_sample / 1e9:.2f} "
            f"GFLOP/sample, {unet.achieved_tflops:.3f} TFLOP/s at batch {args.ensemble}"
            f"{peak_fraction(unet, args.peak_tflops)}; VAE decode, s/image: batch 1 "
            f"{unet.decode_seconds_batch_1:.4f}, batch {args.ensemble} "
            f"{unet.decode_seconds_batch_e:.4f}"
        )
    print()
    if args.data:
        print(f"mIoU: first {args.limit} images of {args.data} ({args.split})\n")
    print(render_table(rows))
    if args.json:
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "machine": machine_line(device),
            "unet": {
                str(r): {**asdict(u), "achieved_tflops": u.achieved_tflops}
                for r, u in unets.items()
            },
            "rows": [asdict(row) for row in rows],
            "seconds_per_image_all": seconds_all,
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
