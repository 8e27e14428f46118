"""What both benchmarks share: model sizes, peak-memory and timing helpers, the machine line.

Sizes: ``tiny`` is segdiff's tiny configuration (CPU); ``sd2`` is Stable Diffusion 2 (768-v)
at full size with random weights, since no SD2 checkpoint is on disk. The SD2 configs below
are written out from the published model and are checked by parameter count in
``tests/test_benchmarks_smoke.py`` (UNet 865,910,724, VAE 83,653,863); the text encoder's
token table is sized to segdiff's offline tokenizer (514 rows instead of 49,408), which
changes no computation.
"""

import ctypes
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging
from rich.progress import Progress

from segdiff.model.tiny import build_tiny_components

# Casting a model with .to(dtype) makes diffusers warn on every call, and loading draws
# progress bars; neither is anything to act on here.
diffusers_logging.set_verbosity_error()
diffusers_logging.disable_progress_bar()

SIZES = ("tiny", "sd2")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

SD2_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": {
        "sample_size": 96,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "norm_num_groups": 32,
    },
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 768,
        "scaling_factor": 0.18215,
    },
    "text_encoder": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "max_position_embeddings": 77,
        "projection_dim": 512,
        "hidden_act": "gelu",
    },
}
"""SD2's scheduler config is the tiny one: v-prediction, scaled-linear betas, 1000 steps."""

DEFAULT_RESOLUTION = {"tiny": 64, "sd2": 768}


def build_components(
    size: str, seed: int = 0, tiny_overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The six components of an untrained SegDiffPipeline of this size (random weights);
    ``tiny_overrides`` change the tiny configs as a recipe's ``model.tiny`` does."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {SIZES}")
    return build_tiny_components(seed, SD2_CONFIGS if size == "sd2" else tiny_overrides)


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int | None) -> None:
    """Fix torch's CPU thread count. On a CPU shared with other busy processes, one thread
    is faster and far steadier than several: a thread that loses its core stalls the others
    at every operator's barrier (measured here: 2 threads 0.13-0.73 s per tiny UNet call,
    1 thread 0.047 s)."""
    if threads:
        torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- peak memory -------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _release_free_heap() -> None:
    """Hand freed malloc memory back to the OS, so an earlier run's freed pages cannot hide
    the next run's allocations from the RSS peak (glibc only; a no-op elsewhere)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class PeakMemory:
    """Peak memory *above the level at entry* (weights already loaded are not counted), in
    MiB. CUDA: max allocated by torch. CPU: peak resident set size (VmHWM, reset through
    /proc/self/clear_refs) minus the RSS at entry; the whole process counts, so run nothing
    else in it meanwhile. ``None`` where the platform cannot measure it."""

    device: torch.device
    mib: float | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_heap()
            self._start = _proc_status_kib("VmRSS") if _reset_peak_rss() else None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.mib = (peak - self._start) / 2**20
        elif self._start is not None:
            peak = _proc_status_kib("VmHWM")
            self.mib = None if peak is None else max(0, peak - self._start) / 1024


# --- timing ------------------------------------------------------------------------------


@dataclass
class Measurement:
    seconds: list[float]
    """Wall-clock seconds of each run."""
    cpu_seconds: list[float]
    """CPU seconds this process used in each run (all threads): less sensitive than wall time
    to other processes on a shared CPU, though not immune (cache and memory contention)."""
    peak_mib: list[float]

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(self.cpu_seconds)

    @property
    def max_peak_mib(self) -> float | None:
        return max(self.peak_mib) if self.peak_mib else None


Sample = tuple[float, float, float | None]
"""(wall seconds, CPU seconds, peak MiB above entry or None) of one run."""


def measure(run: Callable[[], Any], device: torch.device) -> tuple[Sample, Any]:
    """Time one call of ``run()`` and its peak memory, in this process; also its result."""
    with PeakMemory(device) as memory:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run()
        synchronize(device)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return (elapsed, cpu, memory.mib), result


def interleaved(
    runners: dict[str, Callable[[int], Sample | None]], rounds: int, device: torch.device
) -> dict[str, Measurement]:
    """Time ``runners`` (name -> run(round)) in turn, A/B/A/B, ``rounds`` times each, so load
    from other processes falls on every runner alike. A runner that works in another process
    measures itself there and returns its `Sample`; the others are measured here."""
    results = {name: Measurement([], [], []) for name in runners}
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring", total=rounds * len(runners))
        for round_index in range(rounds):
            for name, run in runners.items():
                progress.update(task, description=f"round {round_index + 1}: {name}")
                here, reported = measure(partial(run, round_index), device)
                elapsed, cpu, mib = reported or here
                results[name].seconds.append(elapsed)
                results[name].cpu_seconds.append(cpu)
                if mib is not None:
                    results[name].peak_mib.append(mib)
                progress.advance(task)
    return results


def format_mib(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:,.0f}"


def parameter_mib(*modules: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / 2**20


def machine_line(device: torch.device) -> str:
    """Where the figures come from: CPU or GPU model, cores, torch version, load."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = _cpu_model() or platform.processor() or "unknown CPU"
        where += f", {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{where}; torch {torch.__version__}{load}"


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None
