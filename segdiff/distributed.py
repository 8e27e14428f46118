"""One process or many: what every command needs to know about the launch it runs in.

``accelerate launch`` and ``torchrun`` start several processes that run the same command; the
helpers here tell each process who it is and let the main process make the choices that all
of them must share.
"""

import os
from collections.abc import Callable
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, parse_flag_from_env

from segdiff.errors import SegDiffInputError

T = TypeVar("T")


def process_state() -> PartialState:
    """Accelerate's view of this launch. Processes started on a machine without CUDA (by
    ``torchrun`` or ``accelerate launch --multi_gpu``) shard over gloo on the CPU; accelerate
    treats them as unrelated single processes unless told ``cpu``. ``accelerate launch --cpu``
    (one process) keeps the CPU as well."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (several and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def main_process_decides(choose: Callable[[], T]) -> T:
    """``choose()`` on the main process only; every process gets its result, or raises its
    SegDiffInputError. For choices that must not differ between processes, such as the next
    free run folder."""
    state = process_state()
    choice: list = [None, None]
    if state.is_main_process:
        try:
            choice = [choose(), None]
        except SegDiffInputError as err:
            choice = [None, str(err)]
    if state.num_processes > 1:
        broadcast_object_list(choice, from_process=0)
    result, error = choice
    if error is not None:
        raise SegDiffInputError(error)
    return result
