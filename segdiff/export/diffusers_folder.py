"""Export to a clean diffusers pipeline folder (docs/model-folder.md).

The folder holds ``model_index.json`` and the six component folders with safetensors weights,
nothing of training (no optimizer state), plus ``recipe.yaml`` and ``metrics.json`` when the
model came with them and a ``README.md`` model card. The fp32 weights are always written, so
``SegDiffPipeline.from_pretrained(DIR)`` and ``segdiff infer --model DIR`` load it as it is;
``dtype="fp16"`` or ``"bf16"`` adds that precision as a diffusers variant beside them
(``diffusion_pytorch_model.fp16.safetensors``, loaded with ``variant="fp16"``).

Every written precision is loaded back and compared with the source, weight by weight, before
the folder is put in place.

The folder holds no code: ``SegDiffPipeline`` comes from the installed segdiff package.
"""

import tempfile
from pathlib import Path

import torch

from segdiff.export.common import StepCallback, check_dtype, write_records
from segdiff.export.source import WEIGHTED_COMPONENTS, resolve_source
from segdiff.export.staging import staged_output
from segdiff.model.pipeline import SegDiffPipeline


def export_diffusers(
    model: str | Path,
    out: str | Path,
    dtype: str = "fp32",
    overwrite: bool = False,
    on_step: StepCallback | None = None,
) -> list[str]:
    """Export ``model`` (run, model, checkpoint folder or hub id) to the folder ``out``.

    Returns the precisions written (``["fp32"]`` or ``["fp32", dtype]``). Raises
    SegDiffInputError for bad input; ``out`` is then left as it was.
    """
    step = on_step or (lambda _: None)
    torch_dtype = check_dtype(dtype)
    source = resolve_source(model)
    dtypes = ["fp32"] if dtype == "fp32" else ["fp32", dtype]
    with staged_output(Path(out), overwrite, source.read_paths) as staging:
        step(f"Loading the {source.describe()}")
        pipe = source.load()
        step("Writing fp32 weights")
        pipe.save_pretrained(staging, safe_serialization=True)
        step("Checking the fp32 weights load back")
        _check_reload(staging, pipe, variant=None)
        step("Writing the model card")
        write_records(staging, pipe, source, "diffusers", dtypes)
        if dtype != "fp32":
            step(f"Writing the {dtype} variant")
            pipe.to(torch_dtype)
            _add_variant(pipe, staging, dtype)
            step(f"Checking the {dtype} variant loads back")
            _check_reload(staging, pipe, variant=dtype)
    return dtypes


def _add_variant(pipe: SegDiffPipeline, folder: Path, variant: str) -> None:
    """Save ``pipe`` as a variant and move in only its weight files (the files the fp32 save
    does not have). Its configs stay out: transformers records the weights' dtype in
    config.json and would then load the fp32 weights in half precision too."""
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        pipe.save_pretrained(scratch, safe_serialization=True, variant=variant)
        for path in sorted(Path(scratch).rglob("*")):
            target = folder / path.relative_to(scratch)
            if path.is_file() and not target.exists():
                path.rename(target)


def _check_reload(folder: Path, pipe: SegDiffPipeline, variant: str | None) -> None:
    """Load ``folder`` as a user will and demand every weight equal to ``pipe``'s."""
    reloaded = SegDiffPipeline.from_pretrained(folder, variant=variant)
    for name in WEIGHTED_COMPONENTS:
        expected = getattr(pipe, name).state_dict()
        actual = getattr(reloaded, name).state_dict()
        if expected.keys() != actual.keys():
            raise RuntimeError(f"the exported {name} has other weights than the source")
        for key, tensor in expected.items():
            if not torch.equal(actual[key].to(tensor.dtype), tensor):
                raise RuntimeError(f"the exported {name} weight {key} differs from the source")
