import numpy as np

from segdiff.data import shapes
from segdiff.data.shapes import generate_sample
from segdiff.vocabularies import get_vocabulary


def test_same_seed_same_sample_and_other_seeds_differ():
    image, labels = generate_sample((7, 0, 3))
    again_image, again_labels = generate_sample((7, 0, 3))
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    other_image, _ = generate_sample((7, 0, 4))
    assert not np.array_equal(image, other_image)


def test_sample_types_sizes_and_classes():
    for i in range(20):
        image, labels = generate_sample(i, size=(40, 56))
        assert image.dtype == np.uint8 and labels.dtype == np.uint8
        assert image.shape == (*labels.shape, 3)
        assert 40 <= labels.shape[0] <= 56 and 40 <= labels.shape[1] <= 56
        present = set(np.unique(labels).tolist())
        assert 0 in present and 2 <= len(present) <= 5  # background + 1..4 shapes
        assert present <= set(range(len(get_vocabulary("shapes").classes)))


def test_every_class_occurs_and_shapes_are_big_enough_to_learn():
    counts = np.zeros(7, dtype=np.int64)
    smallest = 1.0
    for i in range(60):
        _, labels = generate_sample((0, 0, i))
        counts += np.bincount(labels.ravel(), minlength=7)
        for k in np.unique(labels[labels > 0]):
            smallest = min(smallest, np.count_nonzero(labels == k) / labels.size)
    assert (counts > 0).all()
    assert smallest > 0.01  # even a thin, partly hidden ring keeps dozens of pixels at 64 px


def test_shapes_stand_out_from_the_background():
    contrasts = []
    for i in range(30):
        image, labels = generate_sample((1, 0, i))
        image = image.astype(np.float64)
        background = image[labels == 0].mean(axis=0)
        for k in np.unique(labels[labels > 0]):
            contrasts.append(np.linalg.norm(image[labels == k].mean(axis=0) - background))
    assert np.median(contrasts) > 60


def test_jobs_are_seeded_per_split_and_index():
    train = shapes.find_jobs("train", 3, seed=5)
    val = shapes.find_jobs("val", 3, seed=5)
    assert [job.name for job in train] == ["000000", "000001", "000002"]
    first_train, first_val = train[0].convert(), val[0].convert()
    assert not np.array_equal(first_train.image, first_val.image)
    assert np.array_equal(first_train.labels, generate_sample((5, 0, 0))[1])
    assert first_train.labels.dtype == np.uint16
