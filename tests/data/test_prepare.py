import pytest

from segdiff.data.prepare import prepare_dataset
from segdiff.data.prepared import open_prepared
from segdiff.errors import SegDiffInputError


def test_shapes_from_python(tmp_path):
    result = prepare_dataset(
        "shapes", None, tmp_path / "out", train_size=3, val_size=2, size=(20, 24), seed=1
    )
    assert result.out == (tmp_path / "out").resolve()
    assert result.vocabulary_size == 7 and result.failures == 0
    assert [(s.split, s.images) for s in result.splits] == [("train", 3), ("val", 2)]
    val = open_prepared(tmp_path / "out", "val")
    assert all(20 <= side <= 24 for side in val.load_mask(val.image_names[0]).shape)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset"),
        ({"dataset": "voc", "size": 32}, "only apply to shapes"),
        ({"dataset": "shapes", "size": 8}, "16..4096"),
        ({"dataset": "shapes", "size": (40, 20)}, "MIN <= MAX"),
        ({"dataset": "voc"}, "ROOT is required"),
    ],
)
def test_bad_arguments_are_input_errors(tmp_path, arguments, message):
    with pytest.raises(SegDiffInputError, match=message):
        prepare_dataset(root=None, out=tmp_path / "out", **arguments)
