"""Class lists: what ``--classes`` accepts, and the rules every class list obeys.

``--classes`` (infer, and the demo's text box) is a text file with one class a line, a
built-in vocabulary name, or names separated by commas. A value that only looks like one of
these is refused with what it looked like, because running with it would label the image
with a class nobody meant (docs/class-lists.md):

- a lone value that looks like a file path (``classes.txt``, ``lists/voc.txt``) but names no
  file;
- a lone value that is a vocabulary name but for case, spaces, "-" or "_" (``ADE-150``), one
  edit away from one (``ade15``, ``shape``), the start of one (``voc``, ``cocostuff``), or
  its letters followed by digits (``ade20k``, ``voc2012``, ``coco2017``);
- a lone value with spaces and no comma (``cat sofa window``): a comma list missing commas.

A trailing comma (``"traffic light,"``) says "this is a comma list as written" and skips
these checks. Quotes around the whole value or a name are removed. Every list, from any
source, is checked by `check_class_names`: no empty list, empty names or duplicates, where
names that differ only in case or spacing are duplicates.

This module reads no model and imports no torch, so the command line checks a list before
it loads anything.
"""

import codecs
import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from segdiff.depth_coding import MAX_CLASSES, NONE_LABEL
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import VOCABULARY_NAMES, get_vocabulary

MAX_VOCABULARY_EDITS = 1
"""A lone value this many edits or fewer from a vocabulary name is taken for a typo of it
(two would catch real class names: "shoes" is two edits from "shapes")."""
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def resolve_classes(value: str, read_files: bool = True) -> list[str]:
    """``--classes``: a file (one class a line), a built-in vocabulary name, or "a,b,c".

    ``read_files=False`` never touches the file system: the demo page takes this text from
    strangers. Raises SegDiffInputError for a list that is empty, malformed or only looks
    like a file or vocabulary name (see the module docstring).
    """
    text = _unquote(value.strip())
    path = Path(text).expanduser()
    if read_files and _is_file(path):
        names = read_class_file(path)
    elif text in VOCABULARY_NAMES:
        names = list(get_vocabulary(text).classes)
    else:
        if "," not in text:
            _refuse_look_alikes(text, read_files)
        names = text.split(",")
        if len(names) > 1 and not names[-1].strip():
            names.pop()  # a trailing comma: "traffic light," is one class, as written
        names = [_unquote(name.strip()) for name in names]
    names = check_class_names(names)
    if len(names) > MAX_CLASSES:
        raise SegDiffInputError(
            f"{len(names)} classes given; label PNGs hold at most {MAX_CLASSES} classes "
            f"(value {NONE_LABEL} means none). Split the list, or use 'segdiff eval' for large "
            "benchmarks."
        )
    return names


def check_class_names(classes: Sequence[str]) -> list[str]:
    """Strip names; reject an empty list, empty names and duplicates with a clear message.

    Names that differ only in case or spacing ("Circle", "circle ", "chest  of drawers")
    are duplicates: one text prompt each, they would compete for the same pixels.
    """
    if isinstance(classes, str):
        raise SegDiffInputError("classes must be a list of names, not one string")
    names = [str(name).strip() for name in classes]
    if not names:
        raise SegDiffInputError("the class list is empty; give at least one class name")
    if any(not name for name in names):
        raise SegDiffInputError(f"the class list has an empty name: {list(classes)!r}")
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(_comparable(name), []).append(name)
    repeated = [group for group in spellings.values() if len(group) > 1]
    if repeated:
        shown = "; ".join(" and ".join(repr(name) for name in group) for group in repeated)
        raise SegDiffInputError(
            f"the class list names these classes twice: {shown} (names that differ only in "
            "case or spacing are the same class)"
        )
    return names


def read_class_file(path: Path) -> list[str]:
    """Names of a class file: one a line, ``#`` lines and blank lines skipped. UTF-8, or
    UTF-16/32 with a byte-order mark; other encodings are refused with how to convert."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SegDiffInputError(f"cannot read class file {path}: {err}") from err
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise SegDiffInputError(
            f"class file {path} is not {encoding.upper()} text (byte {data[err.start]:#04x} "
            f"at offset {err.start}); save it as UTF-8 (for example 'iconv -f latin1 -t utf-8 "
            f"{path} > classes-utf8.txt')"
        ) from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise SegDiffInputError(
            f"class file {path} holds NUL characters: it is UTF-16 without a byte-order mark, "
            "or not text at all; save it as UTF-8"
        )
    lines = [line.strip() for line in text.splitlines()]
    return [_unquote(line) for line in lines if line and not line.startswith("#")]


def suggest_vocabulary(value: str) -> list[str]:
    """Vocabulary names ``value`` may be a typo of (see the module docstring); [] if none."""
    typed = re.sub(r"[\s_-]", "", value.casefold())
    if typed in VOCABULARY_NAMES:
        return [] if typed == value else [typed]
    close = [name for name in VOCABULARY_NAMES if _edits(typed, name) <= MAX_VOCABULARY_EDITS]
    if close:
        return close
    letters = re.match(r"[a-z]*", typed).group()
    with_digits = len(letters) >= 2 and any(char.isdigit() for char in typed)
    return [
        name
        for name in VOCABULARY_NAMES
        if (len(typed) >= 3 and name.startswith(typed))
        or (with_digits and name.startswith(letters))
    ]


def _refuse_look_alikes(text: str, read_files: bool) -> None:
    """Raise for a lone value (no comma) that looks like a file, a vocabulary or a list."""
    as_written = f'To use "{text}" as one class name as written, end it with a comma: "{text},".'
    if _looks_like_path(text):
        path = Path(text).expanduser()
        if read_files and path.is_dir():
            raise SegDiffInputError(f"--classes {text} is a folder; give a class file in it")
        where = "does not exist" if read_files else "cannot be read here"
        hint = _close_files(path) if read_files else ""
        raise SegDiffInputError(
            f'--classes "{text}" looks like a class file, but that file {where}{hint}. '
            f"Give a file that exists, names separated by commas, or a vocabulary "
            f"({', '.join(VOCABULARY_NAMES)}). {as_written}"
        )
    vocabularies = suggest_vocabulary(text)
    if vocabularies:
        raise SegDiffInputError(
            f'--classes "{text}" looks like a built-in vocabulary name, but is none: did you '
            f"mean {' or '.join(vocabularies)}? {as_written}"
        )
    words = text.split()
    if len(words) > 1:
        raise SegDiffInputError(
            f'--classes "{text}" is one name with spaces: class lists are separated by '
            f'commas. Did you mean "{",".join(words)}"? {as_written}'
        )


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") or bool(_FILE_SUFFIX.search(text))


def _close_files(path: Path) -> str:
    """ " (did you mean X?)" for files next to ``path`` with a similar name, else ""."""
    folder = path.parent
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return f" (nor does the folder {folder})" if not folder.is_dir() else ""
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(str(folder / n) for n in close)}?)" if close else ""


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a long comma list is no valid file name
        return False


def _unquote(text: str) -> str:
    """``text`` without one pair of quotes around it ("x", 'x', “x”, ‘x’), unless the
    quotes also appear inside (``"a", "b"`` is two quoted names, not one)."""
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        return text[1:-1].strip()
    return text


def _comparable(name: str) -> str:
    return " ".join(name.split()).casefold()


def _edits(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]
