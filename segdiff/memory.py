"""Memory: how much a device has, sizes checked before allocating, and out-of-memory errors.

A size that cannot fit (a processing resolution of 100000, a model config of a billion
channels) is refused before anything is allocated, since an allocation that large may
succeed on paper and then take the machine down. What passes the check can still run out of
memory; `is_out_of_memory` recognises torch's and numpy's ways of saying so, and the command
line turns them into advice on what to lower.
"""

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from segdiff.errors import SegDiffInputError

if TYPE_CHECKING:
    import torch

_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def device_memory(device: "torch.device") -> int:
    """Bytes of memory ``device`` has in all: a GPU's own memory; for the CPU the machine's
    RAM, or the container's limit when lower."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = _CGROUP_LIMIT.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def check_fits(needed: int, device: "torch.device", what: str, advice: str) -> None:
    """SegDiffInputError when ``needed`` bytes exceed all of ``device``'s memory."""
    available = device_memory(device)
    if needed > available:
        raise SegDiffInputError(
            f"{what} needs at least {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(available)} this {'GPU' if device.type == 'cuda' else 'machine'} "
            f"has; {advice}"
        )


def is_out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), the CPU allocator's RuntimeError, numpy's MemoryError."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    message = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in message or "out of memory" in message
    )


def out_of_memory_message(err: BaseException, advice: str) -> str:
    """One paragraph for an out-of-memory error: what torch said, then ``advice``."""
    said = " ".join(str(err).split())[:300] or type(err).__name__
    return f"out of memory ({said}). {advice}"


def format_bytes(count: float) -> str:
    """1234567 -> "1.2 MB" (powers of 1000)."""
    units = ("bytes", "KB", "MB", "GB", "TB", "PB", "EB")
    power = min(int(math.log10(max(count, 1)) // 3), len(units) - 1)
    return f"{count:.0f} bytes" if power == 0 else f"{count / 1000**power:.1f} {units[power]}"
