"""What every subcommand shares: the console, the exit codes (bad input and running out of
memory: 2, Ctrl-C: 130), and the checks of an output folder."""

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from segdiff.console import console
from segdiff.errors import SegDiffInputError
from segdiff.memory import is_out_of_memory, out_of_memory_message

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-paragraph error and return the Exit to raise (code 2: bad input)."""
    console.print(f"Error: {message}", markup=False, style="red", soft_wrap=True)
    return typer.Exit(code=code)


def interrupted(how_to_continue: str) -> typer.Exit:
    """Ctrl-C: say how to pick up where the command stopped; exit code 130 (128 + SIGINT)."""
    console.print(f"Interrupted. {how_to_continue}", markup=False, style="yellow", soft_wrap=True)
    return typer.Exit(code=130)


def reports_input_errors(command: F) -> F:
    """Turn SegDiffInputError raised anywhere below a command into a message and exit 2, and
    a Ctrl-C that the command does not handle itself into a short note and exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SegDiffInputError as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            raise interrupted(
                "Files already written are complete (every write is atomic); run the same "
                "command again to redo the rest."
            ) from None

    return wrapper  # type: ignore[return-value]


def reports_out_of_memory(advice: str) -> Callable[[F], F]:
    """Turn running out of memory (CPU or GPU) into a message with ``advice`` and exit 2."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except (MemoryError, RuntimeError) as err:
                if not is_out_of_memory(err):
                    raise
                raise fail(out_of_memory_message(err, advice)) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def check_output_folder(path: Path | None, option: str = "--output") -> None:
    """A folder to write into may be new or an existing folder, never an existing file."""
    if path is not None and (path.exists() or path.is_symlink()) and not path.is_dir():
        raise SegDiffInputError(
            f"{option} {path} is a file; give a folder to write into (it is created if needed)"
        )


def model_default_help(key: str, meaning: str) -> str:
    """Help text for a default that comes from the model, with the bundled model's value."""
    from segdiff.model import bundled_model_defaults

    value = bundled_model_defaults().get(key)
    if isinstance(value, bool):
        value = json.dumps(value)
    bundled = f"; the bundled model's is {value}" if value is not None else ""
    return f" Default: the model's {key} in model_index.json ({meaning}{bundled})."


PermuteClassesOption = Annotated[
    bool | None,
    typer.Option(
        "--permute-classes/--no-permute-classes",
        help="Shuffle the class order of each ensemble member after the first."
        + model_default_help(
            "default_permute_classes",
            "true for models segdiff trains, false for folders saved without the key",
        ),
    ),
]
"""The --permute-classes option of infer, eval and demo (None: the model's default)."""

HalfPrecisionOption = Annotated[
    bool,
    typer.Option(
        "--half-precision",
        help="fp16 weights on CUDA; on a CPU with native bf16 (AVX-512 BF16, AMX), bf16 "
        "autocast: faster, same mIoU.",
    ),
]
"""The --half-precision option of infer, eval and demo (`segdiff.model.loading`)."""


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments to a dict (values stay strings; recipes parse them)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SegDiffInputError(f"overrides are KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = value
    return overrides
