"""What --classes accepts and refuses (segdiff.class_lists); infer, eval and the demo share it."""

import codecs

import pytest

from segdiff.class_lists import check_class_names, resolve_classes, suggest_vocabulary
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import VOCABULARY_NAMES, get_vocabulary


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cat,sofa,window", ["cat", "sofa", "window"]),
        (" cat , sofa ", ["cat", "sofa"]),
        ('"circle", "square"', ["circle", "square"]),
        ("'circle, square'", ["circle", "square"]),
        ("\u201ccircle\u201d,\u2018square\u2019", ["circle", "square"]),
        ("traffic light,", ["traffic light"]),  # a trailing comma: one name, as written
        ("ade15,", ["ade15"]),
        ("shapes", list(get_vocabulary("shapes").classes)),
        ("person", ["person"]),
        ("shoes", ["shoes"]),  # two edits from "shapes": a real class name
        ("pc", ["pc"]),
    ],
)
def test_accepted_lists(value, expected):
    assert resolve_classes(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("clases.txt", "looks like a class file, but that file does not exist"),
        ("lists/voc.txt", "nor does the folder lists"),
        ("ade15", "did you mean ade150?"),
        ("ADE-150", "did you mean ade150?"),
        ("Shapes", "did you mean shapes?"),
        ("voc", "did you mean voc20 or voc21?"),
        ("ade20k", "did you mean ade150 or ade847?"),
        ("coco2017", "did you mean cocostuff171?"),
        ("cat sofa window", 'Did you mean "cat,sofa,window"?'),
        ("circle,Circle", "'circle' and 'Circle'"),
        ("chest of drawers, chest  of drawers", "differ only in case or spacing"),
    ],
)
def test_near_misses_are_refused_with_what_was_meant(value, message):
    with pytest.raises(SegDiffInputError) as refused:
        resolve_classes(value)
    assert message in str(refused.value)
    if "," not in value:
        assert f'end it with a comma: "{value},"' in str(refused.value)


def test_a_typo_of_an_existing_file_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(SegDiffInputError, match=r"did you mean classes\.txt\?"):
        resolve_classes("clases.txt")
    assert resolve_classes("classes.txt") == ["cat", "dog"]
    with pytest.raises(SegDiffInputError, match="is a folder; give a class file in it"):
        resolve_classes(str(tmp_path) + "/")


def test_the_demo_never_reads_a_file(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("secret\n")
    with pytest.raises(SegDiffInputError, match="cannot be read here") as refused:
        resolve_classes(str(names), read_files=False)
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize(
    ("bom", "codec"),
    [
        (b"", "utf-8"),
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "utf-32-le"],
)
def test_class_files_decode_by_their_byte_order_mark(tmp_path, bom, codec):
    path = tmp_path / "classes.txt"
    path.write_bytes(bom + "# ADE\nbackground\nchest of drawers, chest\ncafé\n".encode(codec))
    # the first class is "background", not "\ufeffbackground"
    assert resolve_classes(str(path)) == ["background", "chest of drawers, chest", "café"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("background\ncafé\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 14)"),
        ("background\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
    ],
    ids=["latin-1", "utf-16-without-bom"],
)
def test_class_files_in_other_encodings_are_explained(tmp_path, data, message):
    path = tmp_path / "classes.txt"
    path.write_bytes(data)
    with pytest.raises(SegDiffInputError, match="save it as UTF-8") as refused:
        resolve_classes(str(path))
    assert message in str(refused.value)


def test_duplicates_by_case_or_spacing_anywhere():
    with pytest.raises(SegDiffInputError, match="'Sky' and 'sky'"):
        check_class_names(["Sky", "tree", "sky "])
    assert check_class_names(["sky", "skyline"]) == ["sky", "skyline"]


def test_every_vocabulary_is_a_valid_list_and_no_typo_of_itself():
    for name in VOCABULARY_NAMES:
        classes = list(get_vocabulary(name).classes)
        assert check_class_names(classes) == classes  # no duplicates by case or spacing
        assert suggest_vocabulary(name) == []
