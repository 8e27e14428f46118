"""The SegDiff model: CAM text conditioning, the pipeline, SD2 initialisation, tiny configs."""

from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-shapes"


def default_model_path() -> Path | None:
    """The bundled tiny shapes model, if this install ships it."""
    return BUNDLED_MODEL_DIR if (BUNDLED_MODEL_DIR / "model_index.json").is_file() else None
