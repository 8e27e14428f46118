"""`segdiff export`: a model, run or checkpoint as a clean diffusers folder or as ONNX graphs.

- ``export_diffusers`` (diffusers_folder.py): safetensors pipeline folder, optional fp16/bf16
  variant, recipe, metrics and a model card.
- ``export_onnx`` (onnx.py): five onnxruntime graphs, verified against PyTorch.

Both resolve what MODEL is in source.py and write through staging.py, so a failed export
leaves ``--output`` as it was.
"""

from segdiff.export.diffusers_folder import export_diffusers
from segdiff.export.onnx import ExportVerificationError, export_onnx
from segdiff.export.source import ModelSource, resolve_source

__all__ = [
    "ExportVerificationError",
    "ModelSource",
    "export_diffusers",
    "export_onnx",
    "resolve_source",
]
