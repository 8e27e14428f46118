"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-paragraph message and exit code 2; anything else is a bug and
keeps its traceback. It is a ValueError, so Python callers that catch bad values catch it.
"""

from pathlib import Path


class SegDiffInputError(ValueError):
    """Bad input: a missing or corrupt file, a wrong layout, an invalid class list, ..."""


class DiskFullError(SegDiffInputError):
    """The disk (or the user's quota) ran out while writing ``path``. Everything finished
    before it is kept, so the same command resumes once there is space."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(
            f"disk full at {self.path}: free some space (or write somewhere else) and run the "
            "same command again; what was finished so far is kept"
        )

    def __reduce__(self):  # rebuilt from the path when sent back by a worker process
        return (DiskFullError, (self.path,))
