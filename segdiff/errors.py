"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-paragraph message and exit code 2; anything else is a bug and
keeps its traceback. It is a ValueError, so Python callers that catch bad values catch it.
"""


class SegDiffInputError(ValueError):
    """Bad input: a missing or corrupt file, a wrong layout, an invalid class list, ..."""
