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


def _bundled_json(name: str) -> dict[str, Any]:
    """A JSON object of the bundled model's folder, {} if missing or not an object."""
    try:
        data = json.loads((BUNDLED_MODEL_DIR / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def bundled_model_defaults() -> dict[str, Any]:
    """The inference defaults saved in the bundled model's model_index.json ({} without
    one), for help texts; read as plain JSON, so help stays fast."""
    index = _bundled_json("model_index.json")
    return {**DEFAULTS_OF_OLDER_FOLDERS, **index} if index else {}


def bundled_model_note() -> str:
    """What a user of the bundled model should know, with its measured mIoU."""
    miou = _bundled_json("metrics.json").get("mIoU")
    score = f", scoring {miou:.0f} mIoU on held-out shapes" if isinstance(miou, float) else ""
    return (
        "Using the bundled tiny model: a CPU demo trained only on synthetic shapes "
        f"(background, circle, square, triangle, star, ring, cross){score}; it knows nothing "
        "else."
    )
