"""Loading a model: what counts as a segdiff model folder, and the default model, device and
precision of the command line in one place."""

from collections.abc import Collection
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from safetensors import SafetensorError
from transformers.utils import logging as transformers_logging

from segdiff import run_folder
from segdiff.errors import SegDiffInputError
from segdiff.imageio import read_json_object
from segdiff.model import bundled_model_note, default_model_path
from segdiff.model.folder import check_model_folder, check_model_index
from segdiff.model.pipeline import SegDiffPipeline

ONNX_DESCRIPTION = "segdiff_onnx.json"
"""The file that marks an ONNX export (written by segdiff.export.onnx)."""


def pick_device(device: str | None = None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise SegDiffInputError(f"unknown device {device!r}: {err}") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SegDiffInputError(f"device {device!r} asked for, but no CUDA GPU is available")
    return chosen


def load_pipeline(
    model: str | Path | None = None,
    device: str | None = None,
    half_precision: bool = False,
    variant: str | None = None,
) -> tuple[SegDiffPipeline, list[str]]:
    """Load ``model`` (default: the bundled tiny shapes model) on ``device``.

    Half precision means fp16 weights on CUDA, and on a CPU with native bf16 (AVX-512 BF16 or
    AMX) fp32 weights run under bf16 autocast (`SegDiffPipeline.enable_bf16_autocast`: the
    tiny model at 256 px 1.7x as fast as in fp32, at the same mIoU). Other CPUs stay fp32, and
    the returned notes say so.
    """
    notes = []
    if model is None:
        model = default_model_path()
        if model is None:
            raise SegDiffInputError(
                "no --model given and this install has no bundled model; pass a segdiff "
                "model folder or hub id with --model"
            )
        notes.append(bundled_model_note())
    target = pick_device(device)
    dtype = torch.float32
    bf16_autocast = False
    if half_precision:
        if target.type == "cuda":
            dtype = torch.float16
        elif target.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            bf16_autocast = True
        else:
            notes.append(
                "--half-precision: this CPU has no native bf16 (AVX-512 BF16 or AMX); running fp32."
            )
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    source, is_checkpoint = _what_to_load(model)
    try:
        if is_checkpoint:
            from segdiff.training.checkpoints import load_checkpoint_pipeline

            notes.append(f"Loading the training checkpoint {source}.")
            pipe = load_checkpoint_pipeline(source)
            if pipe.dtype != dtype:
                pipe = pipe.to(dtype=dtype)
        else:
            pipe = SegDiffPipeline.from_pretrained(source, dtype=dtype, variant=variant)
    except SegDiffInputError:
        raise
    except (OSError, ValueError, SafetensorError) as err:  # what diffusers says of bad files
        raise SegDiffInputError(f"cannot load the model {model}: {err}") from err
    pipe.set_progress_bar_config(disable=True)
    pipe.to(target)
    pipe.enable_bf16_autocast(bf16_autocast)
    # NHWC convolutions: oneDNN (CPU) and tensor cores (CUDA) run them without the layout
    # conversions NCHW costs (the tiny model at 128 px on a CPU: 10% less time).
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    return pipe, notes


def _what_to_load(model: str | Path) -> tuple[str | Path, bool]:
    """(model folder, hub id or checkpoint folder; whether it is a checkpoint). A training
    run gives its final model, or its newest checkpoint while it has none."""
    path = Path(model)
    if run_folder.is_checkpoint(path):
        return path, True
    if not run_folder.is_run(path):
        return model, False
    final = run_folder.model_dir(path)
    if (final / "model_index.json").is_file():
        return final, False
    latest = run_folder.latest_checkpoint(path)
    if latest is None:
        raise SegDiffInputError(
            f"training run {path} has neither a final model/ nor a finished checkpoint yet"
        )
    return latest, True


def check_is_segdiff_model(
    name_or_path: str | Path, cache_dir: str | None = None, loaded: Collection[str] = ()
) -> None:
    """Raise a clear SegDiffInputError unless this is a segdiff pipeline folder or hub id.

    A local folder is checked whole (`segdiff.model.folder`), except the components in
    ``loaded``; of a hub id, only model_index.json is fetched and checked before loading.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if (path / ONNX_DESCRIPTION).is_file():
            raise SegDiffInputError(
                f"{path} is an ONNX export (segdiff export --format onnx), which segdiff runs "
                "only as the diffusers export: export the model again with --format diffusers "
                "and give that folder, or run these graphs with onnxruntime as their README.md "
                "says"
            )
        if not (path / "model_index.json").is_file():
            raise SegDiffInputError(
                f"{path} is not a segdiff model folder: it has no model_index.json"
            )
        check_model_folder(path, loaded)
        return
    if path.exists() or str(name_or_path).count("/") != 1:
        raise SegDiffInputError(f"model not found: {name_or_path} (a folder or a hub id)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        index_path = Path(
            hf_hub_download(str(name_or_path), "model_index.json", cache_dir=cache_dir)
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
        raise SegDiffInputError(
            f"cannot get model {name_or_path} from the Hugging Face hub or its cache: {err}"
        ) from err
    check_model_index(read_json_object(index_path), name_or_path)
