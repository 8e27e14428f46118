"""Converters from public benchmark layouts to jobs for the prepared-format writer."""

from segdiff.data.converters import ade20k, ade20k_full, cocostuff, pcontext, voc
from segdiff.data.converters.common import SPLITS, Converter

CONVERTERS: dict[str, Converter] = {
    converter.dataset: converter
    for converter in (
        ade20k.CONVERTER,
        ade20k_full.CONVERTER,
        voc.CONVERTER,
        pcontext.CONVERTER,
        cocostuff.CONVERTER,
    )
}

__all__ = ["CONVERTERS", "SPLITS", "Converter"]
