"""Benchmarks: a vocabulary plus the rules that turn a prepared split into its ground truth.

The class list given to the model is the benchmark's vocabulary, in order; predictions and
ground truth hold indices into it. A prepared dataset serves a benchmark when its vocabulary
is the benchmark's own, or one the benchmark is derived from (docs/benchmarks.md): VOC-20 is
scored on data prepared as VOC-21 with background pixels ignored, like the boundary band.
Derived ground truth maps classes by name and ignores every class the benchmark lacks.
"""

from dataclasses import dataclass

import numpy as np

from segdiff.class_lists import suggest_vocabulary
from segdiff.data.prepared import PreparedSplit
from segdiff.depth_coding import IGNORE
from segdiff.errors import SegDiffInputError
from segdiff.vocabularies import VOCABULARY_NAMES, Vocabulary, get_vocabulary

BENCHMARK_NAMES = VOCABULARY_NAMES

# Prepared vocabularies each benchmark can be scored on, its own first.
_SOURCES = {"voc20": ("voc20", "voc21")}


@dataclass(frozen=True)
class Benchmark:
    name: str
    vocabulary: Vocabulary
    sources: tuple[str, ...]
    split: str = "val"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.vocabulary.classes

    def label_lut(self, prepared_vocabulary: tuple[str, ...]) -> np.ndarray:
        """Lookup table: prepared vocabulary id (uint16, IGNORE = ignore) -> benchmark id."""
        for source in self.sources:
            if tuple(prepared_vocabulary) == get_vocabulary(source).classes:
                index = {name: i for i, name in enumerate(self.classes)}
                lut = np.full(IGNORE + 1, IGNORE, dtype=np.uint16)
                lut[: len(prepared_vocabulary)] = [
                    index.get(name, IGNORE) for name in prepared_vocabulary
                ]
                return lut
        preview = ", ".join(prepared_vocabulary[:8])
        more = ", ..." if len(prepared_vocabulary) > 8 else ""
        raise SegDiffInputError(
            f"benchmark {self.name} needs data prepared with the vocabulary of "
            f"{' or '.join(self.sources)}, but this prepared dataset has "
            f"{len(prepared_vocabulary)} other classes ({preview}{more}). Prepare the data "
            f"for this benchmark with 'segdiff prepare DATASET ROOT --benchmark "
            f"{self.sources[-1]} --output DIR'."
        )

    def ground_truth(self, prepared: PreparedSplit, lut: np.ndarray, image_name: str) -> np.ndarray:
        """Benchmark ids of one prepared image (uint16, IGNORE where not scored)."""
        return lut[prepared.benchmark_labels(image_name)]


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; SegDiffInputError for an unknown name."""
    if name not in BENCHMARK_NAMES:
        close = suggest_vocabulary(name)
        guess = f"did you mean {' or '.join(close)}? " if close else ""
        raise SegDiffInputError(
            f"unknown benchmark {name!r}; {guess}known benchmarks: {', '.join(BENCHMARK_NAMES)}"
        )
    return Benchmark(name, get_vocabulary(name), _SOURCES.get(name, (name,)))
