"""The SegDiff model: CAM text conditioning, the pipeline, SD2 initialisation, tiny configs."""

import json
from pathlib import Path
from typing import Any

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-shapes"
DEFAULTS_OF_OLDER_FOLDERS = {"default_permute_classes": False}
"""Inference defaults that model folders saved before they existed lack, and the value such a
folder means: how it behaved then."""


def default_model_path() -> Path | None:
    """The bundled tiny shapes model, if this install ships it."""
    return BUNDLED_MODEL_DIR if (BUNDLED_MODEL_DIR / "model_index.json").is_file() else None


def bundled_model_defaults() -> dict[str, Any]:
    """The inference defaults saved in the bundled model's model_index.json ({} without
    one), for help texts; read as plain JSON, so help stays fast."""
    path = BUNDLED_MODEL_DIR / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {**DEFAULTS_OF_OLDER_FOLDERS, **index} if isinstance(index, dict) else {}
