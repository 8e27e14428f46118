"""What every subcommand shares: the console and the translation of bad input to exit 2."""

import functools
from collections.abc import Callable
from typing import TypeVar

import typer

from segdiff.console import console
from segdiff.errors import SegDiffInputError

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
    """Turn SegDiffInputError raised anywhere below a command into a message and exit 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SegDiffInputError as err:
            raise fail(str(err)) from None

    return wrapper  # type: ignore[return-value]


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments to a dict (values stay strings; recipes parse them)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SegDiffInputError(f"overrides are KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = value
    return overrides
