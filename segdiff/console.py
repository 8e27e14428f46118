"""The one console segdiff writes progress and messages to: stderr, so stdout stays clean for
whatever a user pipes. The CLI prints through it too; library code takes it as a default."""

from rich.console import Console

console = Console(stderr=True, highlight=False)
