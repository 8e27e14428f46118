"""The documentation the code and the READMEs point to exists, and nothing points outside
the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *ROOT.glob("segdiff/**/*.py"),
    *ROOT.glob("benchmarks/*"),
    ROOT / "README.md",
    *ROOT.glob("docs/*.md"),
]


def test_every_docs_page_referred_to_exists():
    referred = set()
    for path in SOURCES:
        if path.is_file():
            referred |= set(re.findall(r"docs/([\w-]+\.md)", path.read_text(encoding="utf-8")))
    assert referred, "nothing points to docs/"
    missing = sorted(name for name in referred if not (ROOT / "docs" / name).is_file())
    assert not missing


def test_nothing_points_outside_the_repository():
    # spelled in parts, so that this file does not match a grep for them either
    outside = ["/".join(("..", "shared")), "DESIGN" + ".md"]
    for path in SOURCES:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not [name for name in outside if name in text], path
