"""`segdiff train` (not built yet)."""

from segdiff.cli.common import fail


def command() -> None:
    """Not available yet in this version of segdiff."""
    raise fail("'segdiff train' is not available yet in this version of segdiff.")
