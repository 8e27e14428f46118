import pytest

from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import VOCABULARY_NAMES, get_vocabulary, source_ids

SIZES = {
    "voc20": 20,
    "voc21": 21,
    "pc59": 59,
    "pc459": 459,
    "ade150": 150,
    "ade847": 847,
    "cocostuff171": 171,
    "shapes": 7,
}


def test_every_vocabulary_has_its_benchmark_size():
    assert set(VOCABULARY_NAMES) == set(SIZES)
    for name, size in SIZES.items():
        vocabulary = get_vocabulary(name)
        assert vocabulary.name == name
        assert len(vocabulary.classes) == size
        assert len(source_ids(name)) == size


@pytest.mark.parametrize("name", VOCABULARY_NAMES)
def test_names_are_unique_stripped_and_source_ids_distinct(name):
    vocabulary = get_vocabulary(name)
    assert len(set(vocabulary.classes)) == len(vocabulary.classes)
    assert all(c and c == c.strip() for c in vocabulary.classes)
    assert len(set(source_ids(name))) == len(vocabulary.classes)
    for cls, synonyms in vocabulary.synonyms.items():
        assert cls in vocabulary.classes
        assert synonyms and cls not in synonyms
        assert all(s and s == s.strip() for s in synonyms)


def test_voc_and_shapes_orders():
    assert get_vocabulary("voc21").classes[0] == "background"
    assert get_vocabulary("voc21").classes[1:] == get_vocabulary("voc20").classes
    assert get_vocabulary("voc20").classes[10] == "diningtable"
    assert source_ids("voc20") == tuple(range(1, 21))
    assert get_vocabulary("shapes").classes == (
        "background",
        "circle",
        "square",
        "triangle",
        "star",
        "ring",
        "cross",
    )


def test_ade_names_follow_the_benchmarks():
    ade150 = get_vocabulary("ade150")
    assert ade150.classes[7] == "bed"  # "bed " upstream, stripped
    assert ade150.classes[8] == "windowpane"
    assert ade150.synonyms["windowpane"] == ("window",)
    assert ade150.synonyms["person"][:2] == ("individual", "someone")
    assert source_ids("ade150") == tuple(range(1, 151))
    ade847 = get_vocabulary("ade847")
    assert ade847.classes[:2] == ("wall", "building, edifice")
    assert ade847.classes[-1] == "adding machine, totalizer, totaliser"
    assert ade847.synonyms["building, edifice"] == ("building", "edifice")
    assert source_ids("ade847")[:2] == (2978, 312)


def test_pascal_context_orders_and_spellings():
    pc59 = get_vocabulary("pc59")
    assert pc59.classes[:3] == ("aeroplane", "bag", "bed")
    assert pc59.classes[49] == "diningtable" and pc59.synonyms["diningtable"] == ("table",)
    assert source_ids("pc59")[49] == 397
    pc459 = get_vocabulary("pc459")
    assert pc459.classes[2] == "air conditioner"
    assert pc459.synonyms["air conditioner"] == ("airconditioner",)
    assert pc459.classes[430] == "unknown"
    assert source_ids("pc459") == tuple(range(1, 460))


def test_cocostuff_skips_the_eleven_unused_thing_ids():
    coco = get_vocabulary("cocostuff171")
    assert coco.classes[11] == "stop sign" and source_ids("cocostuff171")[11] == 12
    assert coco.classes[-1] == "wood" and source_ids("cocostuff171")[-1] == 181
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
    assert set(source_ids("cocostuff171")) == set(range(182)) - unused


def test_unknown_vocabulary_lists_the_known_ones():
    with pytest.raises(SegDiffInputError, match="ade847.*cocostuff171"):
        get_vocabulary("ade151")
