"""The run folder: frozen components, checkpoints, and resuming from them.

```
RUN/recipe.yaml                 resolved recipe
RUN/frozen/                     vae/ text_encoder/ tokenizer/ scheduler/ (saved once)
RUN/checkpoints/step-00000500/
    unet/ cam/                  trainable weights (the EMA weights when EMA is on)
    model_index.json            the pipeline config
    training_state/             optimizer.pt, lr_scheduler.json, rng-<rank>.safetensors,
                                trainable.safetensors (raw weights, only with EMA)
    checkpoint.json             step, epoch, data position, ...
RUN/model/                      final SegDiffPipeline folder
RUN/metrics.json                last validation metrics
RUN/logs/                       TensorBoard events
```

Weights are safetensors. The optimizer state is a torch file, read back only with
``torch.load(..., weights_only=True)``; nothing here unpickles. A checkpoint is written to a
temporary folder and renamed into place, so a run killed mid-save leaves no half checkpoint.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from segdiff.errors import SegDiffInputError
from segdiff.imageio import save_json
from segdiff.model.cam import ContentAttentionModule
from segdiff.model.pipeline import SegDiffPipeline

FROZEN = ("vae", "text_encoder", "tokenizer", "scheduler")
PREFIX = "step-"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{PREFIX}{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{PREFIX}*") if (p / "checkpoint.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_frozen(run_dir: Path, components: dict[str, Any]) -> None:
    """Write the frozen components once, at the start of a run."""
    for name in FROZEN:
        components[name].save_pretrained(run_dir / "frozen" / name)


def load_frozen(run_dir: Path) -> dict[str, Any]:
    folder = run_dir / "frozen"
    missing = [name for name in FROZEN if not (folder / name).is_dir()]
    if missing:
        raise SegDiffInputError(
            f"{folder} lacks {', '.join(missing)}: {run_dir} is not a complete segdiff run folder"
        )
    return {
        "vae": AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True),
        "text_encoder": CLIPTextModel.from_pretrained(
            folder / "text_encoder", use_safetensors=True
        ),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        "scheduler": DDIMScheduler.from_pretrained(folder / "scheduler"),
    }


def load_trainable(checkpoint: Path) -> tuple[UNet2DConditionModel, ContentAttentionModule]:
    """The checkpoint's UNet and CAM (EMA weights when the run used EMA)."""
    unet = UNet2DConditionModel.from_pretrained(checkpoint / "unet", use_safetensors=True)
    cam = ContentAttentionModule.from_pretrained(checkpoint / "cam", use_safetensors=True)
    return unet, cam


def load_checkpoint_pipeline(checkpoint_dir: str | Path) -> SegDiffPipeline:
    """A checkpoint of a run (``RUN/checkpoints/step-N``) as a ready SegDiffPipeline."""
    checkpoint = Path(checkpoint_dir)
    if not (checkpoint / "checkpoint.json").is_file():
        raise SegDiffInputError(
            f"{checkpoint} is not a segdiff training checkpoint (no checkpoint.json); expected "
            "RUN/checkpoints/step-NNNNNNNN"
        )
    frozen = load_frozen(checkpoint.parent.parent)
    unet, cam = load_trainable(checkpoint)
    return SegDiffPipeline.from_pretrained(checkpoint, unet=unet, cam=cam, **frozen)


def save_training_state(
    folder: Path,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    raw_weights: dict[str, torch.Tensor] | None,
) -> None:
    """Optimizer and LR schedule (and the raw, non-EMA weights when EMA is on)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    schedule = {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
    save_json(schedule, folder / "lr_scheduler.json")
    if raw_weights is not None:
        save_file(
            {k: v.contiguous() for k, v in raw_weights.items()}, folder / "trainable.safetensors"
        )


def load_training_state(
    folder: Path,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state)
    schedule = json.loads((folder / "lr_scheduler.json").read_text(encoding="utf-8"))
    lr_scheduler.load_state_dict({**lr_scheduler.state_dict(), **schedule})


def load_raw_weights(folder: Path) -> dict[str, torch.Tensor] | None:
    path = folder / "trainable.safetensors"
    return load_file(path) if path.is_file() else None


def save_rng(folder: Path, rank: int, noise_generator: torch.Generator) -> None:
    """This process's random state: the noise generator and torch's global generators."""
    states = {"noise": noise_generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(states, folder / f"rng-{rank}.safetensors")


def load_rng(folder: Path, rank: int, noise_generator: torch.Generator) -> None:
    path = folder / f"rng-{rank}.safetensors"
    if not path.is_file():
        raise SegDiffInputError(
            f"{path} is missing: resume with as many processes as the checkpointed run had"
        )
    states = load_file(path)
    noise_generator.set_state(states["noise"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes: processes of a run must agree on it exactly."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def temporary_dir(final: Path) -> Path:
    return final.parent / f".tmp-{final.name}"


def publish(temporary: Path, final: Path, keep: int) -> None:
    """Rename a finished checkpoint into place and delete the oldest beyond ``keep``."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in list_checkpoints(final.parent.parent)[:-keep]:
        shutil.rmtree(old)


def read_checkpoint_info(checkpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint / "checkpoint.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SegDiffInputError(f"cannot read {checkpoint / 'checkpoint.json'}: {err}") from err
