"""The run folder of `segdiff train`: its layout, and every question asked about it.

```
RUN/recipe.yaml                 the resolved recipe
RUN/frozen/                     vae/ text_encoder/ tokenizer/ scheduler/ (saved once)
RUN/checkpoints/step-00000500/
    unet/ cam/                  trainable weights (the EMA weights when EMA is on)
    model_index.json            the pipeline config
    training_state/             optimizer.pt, lr_scheduler.json, rng-<rank>.safetensors,
                                trainable.safetensors (raw weights, only with EMA)
    checkpoint.json             step, epoch, data position, ...
RUN/model/                      the final SegDiffPipeline folder
RUN/metrics.json                the last validation metrics
RUN/logs/                       TensorBoard events
```

Checkpoints and the final model are written into a hidden temporary folder beside their place
and renamed into it when complete, so a run killed mid-save leaves nothing half-written. The
trainer, ``segdiff train --resume`` and ``segdiff export`` all ask this module; what goes
into a checkpoint is `segdiff.training.checkpoints`.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segdiff.errors import SegDiffInputError

TRAIN_RUNS = Path("runs") / "train"
"""Where runs go without --output: runs/train/<recipe name>, then <name>-2, <name>-3, ..."""
RECIPE = "recipe.yaml"
METRICS = "metrics.json"
FROZEN = ("vae", "text_encoder", "tokenizer", "scheduler")
"""Components that never change during a run; saved once to RUN/frozen."""
TRAINED = ("unet", "cam")
"""Components every checkpoint holds."""
CHECKPOINT_INFO = "checkpoint.json"
TRAINING_STATE = "training_state"
_STEP_PREFIX = "step-"


def frozen_dir(run_dir: Path) -> Path:
    return run_dir / "frozen"


def model_dir(run_dir: Path) -> Path:
    return run_dir / "model"


def logs_dir(run_dir: Path) -> Path:
    return run_dir / "logs"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{_STEP_PREFIX}{step:08d}"


def run_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to."""
    return checkpoint.parent.parent


def run_of_model(model: Path) -> Path | None:
    """The run folder whose final model ``model`` is, or None for a model folder elsewhere."""
    return model.parent if model.name == model_dir(model.parent).name else None


def is_checkpoint(path: Path) -> bool:
    """A finished checkpoint: its checkpoint.json is written last."""
    return (path / CHECKPOINT_INFO).is_file()


def is_run(path: Path) -> bool:
    """A run folder with something to load: a final model or checkpoints."""
    return (path / RECIPE).is_file() and (
        model_dir(path).is_dir() or (path / "checkpoints").is_dir()
    )


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{_STEP_PREFIX}*") if is_checkpoint(p)]
    return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest finished checkpoint of a run, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def missing_parts(checkpoint: Path) -> list[Path]:
    """What a checkpoint and its run lack to make a pipeline (empty when complete)."""
    needed = [checkpoint / "model_index.json", *(checkpoint / part for part in TRAINED)]
    needed += [frozen_dir(run_of(checkpoint)) / part for part in FROZEN]
    return [path for path in needed if not path.exists()]


def read_checkpoint_info(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / CHECKPOINT_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SegDiffInputError(f"cannot read {path}: {err}") from err
    if not isinstance(info, dict):
        raise SegDiffInputError(f"{path} must hold a JSON object")
    return info


def checkpoint_step(checkpoint: Path) -> int:
    step = read_checkpoint_info(checkpoint).get("step")
    if not isinstance(step, int):
        raise SegDiffInputError(
            f"{checkpoint / CHECKPOINT_INFO} has no integer 'step'; is the checkpoint complete?"
        )
    return step


def staging_dir(final: Path, fresh: bool = False) -> Path:
    """The hidden folder a checkpoint or model is written into before it is renamed to
    ``final``. ``fresh``: emptied (a run killed mid-save leaves one behind) and created."""
    temporary = final.parent / f".tmp-{final.name}"
    if fresh:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    return temporary


def publish_checkpoint(temporary: Path, final: Path, keep: int) -> None:
    """Rename a finished checkpoint into place and delete the oldest beyond ``keep``."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in list_checkpoints(run_of(final))[:-keep]:
        shutil.rmtree(old)


@contextmanager
def writing_model(run_dir: Path) -> Iterator[Path]:
    """Yield the staging folder of RUN/model; once written, it replaces RUN/model."""
    final = model_dir(run_dir)
    temporary = staging_dir(final, fresh=True)
    yield temporary
    shutil.rmtree(final, ignore_errors=True)
    temporary.rename(final)


def next_run_dir(base: str | Path) -> Path:
    """``base`` if it does not exist yet, else the first free ``base-2``, ``base-3``, ..."""
    base = Path(base)
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def resolve_run(name: str, output: Path | None, resume: str | None) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None) for ``segdiff train``'s options:
    ``--output`` (default: the next free runs/train/<name>) and ``--resume`` ('latest', a
    checkpoint or a run folder)."""
    if resume is None:
        if output is None:
            return next_run_dir(TRAIN_RUNS / name), None
        if (output / RECIPE).exists():
            raise SegDiffInputError(
                f"{output} already holds a training run; continue it with --resume latest or "
                "choose another --output"
            )
        return output, None
    if resume == "latest":
        run_dir = output if output is not None else _newest_run(name)
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise SegDiffInputError(f"--resume latest: {run_dir} has no finished checkpoint")
        return run_dir, checkpoint
    path = Path(resume)
    if is_checkpoint(path):
        return run_of(path), path
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise SegDiffInputError(
            f"--resume {resume}: not a checkpoint (RUN/checkpoints/step-N with "
            "checkpoint.json) nor a run folder with checkpoints"
        )
    return path, checkpoint


def _newest_run(name: str) -> Path:
    """The highest-numbered existing runs/train/<name>[-N]."""
    runs = [TRAIN_RUNS / name] + sorted(TRAIN_RUNS.glob(f"{name}-*"), key=lambda p: p.name)
    numbered = {}
    for run in runs:
        suffix = run.name[len(name) :].lstrip("-")
        if run.is_dir() and (suffix == "" or suffix.isdigit()):
            numbered[int(suffix or 1)] = run
    if not numbered:
        raise SegDiffInputError(f"--resume latest: no run of {name!r} under {TRAIN_RUNS}")
    return numbered[max(numbered)]
