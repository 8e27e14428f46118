"""Evaluation tests make small prepared datasets from vocabulary-id label maps."""

import pytest


@pytest.fixture
def make_prepared(tmp_path, write_prepared):
    def make(benchmark, vocabulary, labels):
        return write_prepared(tmp_path / f"prepared-{benchmark}", benchmark, vocabulary, labels)

    return make
