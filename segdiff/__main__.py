"""``python -m segdiff`` (and ``accelerate launch -m segdiff``) runs the CLI."""

from segdiff.cli import main

main()
