import numpy as np
import pytest

from segdiff import depth_coding
from segdiff.data.prepared import open_prepared
from segdiff.training.batches import (
    BatchOrder,
    ClassListSettings,
    SampleSettings,
    TrainingSamples,
    collate,
    sample_class_list,
)

VOCABULARY = ("background", "circle", "square", "triangle", "star", "ring", "cross")


def settings(**changes) -> SampleSettings:
    values = dict(
        resolution=32,
        crop=32,
        scale=(1.0, 1.0),
        hflip=False,
        class_lists=ClassListSettings(max_classes=7, max_negatives=3),
        seed=0,
    )
    return SampleSettings(**{**values, **changes})


def draw_lists(present: list[str], count: int = 300, **settings) -> list[list[str]]:
    rng = np.random.default_rng(0)
    lists = ClassListSettings(**{"max_classes": 7, "max_negatives": 3, **settings})
    return [sample_class_list(present, VOCABULARY, lists, rng) for _ in range(count)]


def test_class_list_keeps_present_classes_and_adds_negatives():
    lists = draw_lists(["background", "star"])
    for names in lists:
        assert {"background", "star"} <= set(names)
        assert len(set(names)) == len(names) <= 5
        assert set(names) <= set(VOCABULARY)
    assert {len(names) for names in lists} == {2, 3, 4, 5}  # 0..3 negatives
    assert len({names[0] for names in lists}) > 2  # the order is shuffled


def test_class_list_limits():
    assert {len(n) for n in draw_lists(list(VOCABULARY), max_classes=4)} == {4}
    assert {len(n) for n in draw_lists([], max_negatives=0)} == {1}  # never empty
    # min_negatives fills the list up to max_classes when the vocabulary allows
    assert {len(n) for n in draw_lists(["star"], max_negatives=6, min_negatives=6)} == {7}
    assert {len(n) for n in draw_lists(["star"], max_negatives=6, min_negatives=2)} == {
        3, 4, 5, 6, 7
    }  # fmt: skip


def test_dropped_present_classes_leave_the_list():
    present = ["background", "circle", "star"]
    lists = draw_lists(present, count=2000, drop_present=0.25, max_negatives=0)
    kept = np.mean([len(set(present) & set(names)) for names in lists])
    assert kept == pytest.approx(3 * 0.75, abs=0.1)
    assert all(names for names in lists)
    # with nothing kept, the list is one negative: the whole crop is "none"
    assert any(not set(present) & set(names) and len(names) == 1 for names in lists)
    assert draw_lists(present, count=50) == draw_lists(present, count=50, drop_present=0.0)


@pytest.mark.parametrize("drop_present", [0.0, 0.5])
def test_sample_mask_is_recoded_for_its_class_list(shapes_root, drop_present):
    """Every pixel decodes to its true class, or to none where that class left the list."""
    split = open_prepared(shapes_root, "train")
    lists = ClassListSettings(max_classes=7, max_negatives=3, drop_present=drop_present)
    samples = TrainingSamples(split, settings(class_lists=lists))
    unlisted = 0
    for index in range(len(samples)):
        name = split.image_names[index]
        truth = split.benchmark_labels(name)  # vocabulary ids
        pixels, mask, classes = samples[(0, index)]
        assert pixels.shape == mask.shape == (3, 32, 32)
        assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
        gray = np.rint((mask[0].numpy() + 1.0) * 127.5)
        local = depth_coding.decode(gray, len(classes))
        lut = np.array([VOCABULARY.index(c) for c in classes] + [255] * (256 - len(classes)))
        listed = np.isin(truth, [VOCABULARY.index(c) for c in classes])
        np.testing.assert_array_equal(lut[local], np.where(listed, truth, 255))
        unlisted += int((~listed).sum())
    assert (unlisted > 0) == (drop_present > 0)


def test_samples_are_reproducible_and_augmented(shapes_root):
    split = open_prepared(shapes_root, "train")
    samples = TrainingSamples(split, settings(scale=(1.0, 2.0), hflip=True, crop=24))
    a, b = samples[(3, 5)], samples[(3, 5)]
    assert a[0].equal(b[0]) and a[1].equal(b[1]) and a[2] == b[2]
    assert a[0].shape == (3, 24, 24)
    other_epoch = samples[(4, 5)]
    assert not other_epoch[0].equal(a[0]) or other_epoch[2] != a[2]
    batch = collate([a, other_epoch])
    assert batch.pixels.shape == (2, 3, 24, 24) and len(batch.classes) == 2


def test_batch_order_shards_and_resumes():
    ranks = [BatchOrder(20, 3, rank, 2, seed=1) for rank in range(2)]
    streams = [iter(order) for order in ranks]
    seen = []
    for _ in range(3):  # one epoch: 20 // 6 = 3 global batches
        batches = [next(stream) for stream in streams]
        seen += [key for batch in batches for key in batch]
    assert len(set(seen)) == 18 and {epoch for epoch, _ in seen} == {0}

    full = iter(BatchOrder(20, 3, 0, 1, seed=1))
    expected = [next(full) for _ in range(10)]
    resumed = iter(BatchOrder(20, 3, 0, 1, seed=1, position=4))
    assert [next(resumed) for _ in range(6)] == expected[4:]
    assert expected[6][0][0] == 1  # 6 batches an epoch: the 7th starts epoch 1


def test_batch_order_needs_one_batch():
    from segdiff.errors import SegDiffInputError

    with pytest.raises(SegDiffInputError, match="lower train.batch_size"):
        BatchOrder(5, 4, 0, 2, seed=0)


def test_made_up_negatives_are_new_words_within_the_room():
    lists = draw_lists(["background", "star"], count=500, made_up_negatives=3, max_negatives=2)
    made_up = [[n for n in names if n not in VOCABULARY] for names in lists]
    assert {len(names) for names in made_up} == {0, 1, 2, 3}
    assert all(len(names) <= 7 for names in lists)
    words = [word for names in made_up for word in names]
    assert all(word.isalpha() and word.islower() and 3 <= len(word) <= 10 for word in words)
    assert len(set(words)) > 0.9 * len(words)  # fresh words, not a fixed list
    assert all({"background", "star"} <= set(names) for names in lists)
    assert draw_lists(["star"], count=20, max_classes=2, made_up_negatives=3) == draw_lists(
        ["star"], count=20, max_classes=2, made_up_negatives=3
    )
