"""What a checkpoint and the final model hold, written and read back (the folder layout is
`segdiff.run_folder`'s).

Weights are safetensors. The optimizer state is a torch file, read back only with
``torch.load(..., weights_only=True)``; nothing here unpickles.
"""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from segdiff import run_folder
from segdiff.errors import SegDiffInputError
from segdiff.imageio import reporting_disk_full, save_json
from segdiff.model.cam import ContentAttentionModule
from segdiff.model.pipeline import SegDiffPipeline


def save_frozen(run_dir: Path, components: dict[str, Any]) -> None:
    """Write the frozen components once, at the start of a run (all or nothing)."""
    with (
        reporting_disk_full(run_folder.frozen_dir(run_dir)),
        run_folder.writing_frozen(run_dir) as folder,
    ):
        for name in run_folder.FROZEN:
            components[name].save_pretrained(folder / name)


def has_frozen(run_dir: Path) -> bool:
    return all((run_folder.frozen_dir(run_dir) / name).is_dir() for name in run_folder.FROZEN)


def load_frozen(run_dir: Path) -> dict[str, Any]:
    folder = run_folder.frozen_dir(run_dir)
    missing = [name for name in run_folder.FROZEN if not (folder / name).is_dir()]
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


def load_checkpoint_pipeline(checkpoint: str | Path) -> SegDiffPipeline:
    """A checkpoint of a run (``RUN/checkpoints/step-N``) as a ready SegDiffPipeline.

    A run that is still training deletes its older checkpoints; one deleted while it was
    being read is reported as such, not as whatever file happened to be missing first.
    """
    checkpoint = Path(checkpoint)
    if not run_folder.is_checkpoint(checkpoint):
        raise SegDiffInputError(
            f"{checkpoint} is not a segdiff training checkpoint (no checkpoint.json); expected "
            "RUN/checkpoints/step-NNNNNNNN"
        )
    try:
        frozen = load_frozen(run_folder.run_of(checkpoint))
        unet, cam = load_trainable(checkpoint)
        return SegDiffPipeline.from_pretrained(checkpoint, unet=unet, cam=cam, **frozen)
    except Exception as err:
        if run_folder.is_checkpoint(checkpoint):
            raise
        raise run_folder.checkpoint_removed(checkpoint) from err


def write_trainable(folder: Path, pipeline: SegDiffPipeline) -> None:
    """unet/, cam/ and model_index.json: a pipeline folder minus the frozen parts."""
    pipeline.unet.save_pretrained(folder / "unet", safe_serialization=True)
    pipeline.cam.save_pretrained(folder / "cam", safe_serialization=True)
    pipeline.save_config(folder)


def write_checkpoint(
    folder: Path,
    pipeline: SegDiffPipeline,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    raw_weights: dict[str, torch.Tensor] | None,
    info: dict[str, Any],
) -> None:
    """Everything of a checkpoint but the per-process random states, into its staging
    ``folder``; checkpoint.json last, since it marks the checkpoint finished."""
    with reporting_disk_full(folder):
        save_training_state(
            folder / run_folder.TRAINING_STATE, optimizer, lr_scheduler, raw_weights
        )
        write_trainable(folder, pipeline)
        save_json(info, folder / run_folder.CHECKPOINT_INFO)


def write_vae_checkpoint(
    folder: Path,
    vae: AutoencoderKL,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
) -> None:
    """VAE pre-training at ``step``, into its staging ``folder``: the VAE, its optimizer and
    schedule, and the random state (the VAE samples its latents); checkpoint.json last."""
    state = folder / run_folder.TRAINING_STATE
    with reporting_disk_full(folder):
        vae.save_pretrained(folder / "vae", safe_serialization=True)
        save_training_state(state, optimizer, lr_scheduler, None)
        save_file({"torch": torch.get_rng_state()}, state / "rng.safetensors")
        save_json({"step": step}, folder / run_folder.CHECKPOINT_INFO)


def load_vae_checkpoint(
    folder: Path,
    vae: AutoencoderKL,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Restore what `write_vae_checkpoint` saved."""
    state = folder / run_folder.TRAINING_STATE
    vae.load_state_dict(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    load_training_state(state, optimizer, lr_scheduler)
    torch.set_rng_state(load_file(state / "rng.safetensors")["torch"])


def save_model(run_dir: Path, pipeline: SegDiffPipeline) -> Path:
    """RUN/model: the frozen parts copied from RUN/frozen plus ``pipeline``'s trained weights."""
    model = run_folder.model_dir(run_dir)
    with reporting_disk_full(model), run_folder.writing_model(run_dir) as folder:
        for name in run_folder.FROZEN:
            shutil.copytree(run_folder.frozen_dir(run_dir) / name, folder / name)
        write_trainable(folder, pipeline)
    return model


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
    with reporting_disk_full(folder):
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
