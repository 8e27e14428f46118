"""The run folder of `segdiff train`: its layout, and every question asked about it.

```
RUN/recipe.yaml                 the resolved recipe
RUN/training_data.json          what it trains on: the prepared dataset's meta.json
RUN/frozen/                     vae/ text_encoder/ tokenizer/ scheduler/ (saved once)
RUN/checkpoints/step-00000500/
    unet/ cam/                  trainable weights (the EMA weights when EMA is on)
    model_index.json            the pipeline config
    training_state/             optimizer.pt, lr_scheduler.json, rng-<rank>.safetensors,
                                trainable.safetensors (raw weights, only with EMA)
    checkpoint.json             step, epoch, data position, ...
RUN/vae_pretrain/step-00000060/  while the VAE is pre-trained: vae/, training_state/,
                                checkpoint.json (removed once RUN/frozen/ is written)
RUN/model/                      the final SegDiffPipeline folder
RUN/metrics.json                the last validation metrics
RUN/logs/                       TensorBoard events
```

Checkpoints, RUN/frozen and the final model are written into a hidden ``.tmp-*`` folder beside
their place, given the modes of the user's umask, and renamed into it when complete; old
checkpoints are renamed to a hidden ``.deleting-*`` folder before they are deleted. So a run
killed at any moment leaves only complete folders under their real names, and `remove_stale`
clears the rest when the run continues. The trainer, ``segdiff train --resume`` and
``segdiff export`` all ask this module; what goes into a checkpoint is
`segdiff.training.checkpoints`.
"""

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segdiff.errors import SegDiffInputError
from segdiff.imageio import make_shareable, remove_stale_temporaries

TRAIN_RUNS = Path("runs") / "train"
"""Where runs go without --output: runs/train/<recipe name>, then <name>-2, <name>-3, ..."""
RECIPE = "recipe.yaml"
METRICS = "metrics.json"
TRAINING_DATA = "training_data.json"
FROZEN = ("vae", "text_encoder", "tokenizer", "scheduler")
"""Components that never change during a run; saved once to RUN/frozen."""
TRAINED = ("unet", "cam")
"""Components every checkpoint holds."""
CHECKPOINT_INFO = "checkpoint.json"
TRAINING_STATE = "training_state"
_STEP_PREFIX = "step-"
_STAGING_PREFIX = ".tmp-"
_DELETING_PREFIX = ".deleting-"


def frozen_dir(run_dir: Path) -> Path:
    return run_dir / "frozen"


def model_dir(run_dir: Path) -> Path:
    return run_dir / "model"


def logs_dir(run_dir: Path) -> Path:
    return run_dir / "logs"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{_STEP_PREFIX}{step:08d}"


def vae_checkpoint_dir(run_dir: Path, step: int) -> Path:
    """A checkpoint of VAE pre-training, which comes before the first training step."""
    return run_dir / "vae_pretrain" / f"{_STEP_PREFIX}{step:08d}"


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
    return _finished_steps(run_dir / "checkpoints")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest finished checkpoint of a run, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def latest_vae_checkpoint(run_dir: Path) -> Path | None:
    """The newest finished checkpoint of VAE pre-training, or None."""
    checkpoints = _finished_steps(run_dir / "vae_pretrain")
    return checkpoints[-1] if checkpoints else None


def _finished_steps(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{_STEP_PREFIX}*") if _step_of(p) is not None]
    return sorted((p for p in found if is_checkpoint(p)), key=_step_of)


def _step_of(path: Path) -> int | None:
    number = path.name[len(_STEP_PREFIX) :]
    return int(number) if number.isdigit() else None


def missing_parts(checkpoint: Path) -> list[Path]:
    """What a checkpoint and its run lack to make a pipeline (empty when complete)."""
    needed = [checkpoint / "model_index.json", *(checkpoint / part for part in TRAINED)]
    needed += [frozen_dir(run_of(checkpoint)) / part for part in FROZEN]
    return [path for path in needed if not path.exists()]


def checkpoint_removed(checkpoint: Path) -> SegDiffInputError:
    """The error for a checkpoint that vanished while it was read: its run is training."""
    return SegDiffInputError(
        f"checkpoint {checkpoint} was removed while reading it (its run is still training and "
        "keeps only its newest checkpoints); retry, and the newest one is read"
    )


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
    temporary = final.parent / f"{_STAGING_PREFIX}{final.name}"
    if fresh:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    return temporary


def publish_checkpoint(temporary: Path, final: Path, keep: int) -> None:
    """Rename a finished checkpoint into place and delete the oldest beyond ``keep``."""
    make_shareable(temporary)
    if final.exists():
        _delete(final)
    os.replace(temporary, final)
    for old in _finished_steps(final.parent)[:-keep]:
        _delete(old)


def _delete(folder: Path) -> None:
    """Rename ``folder`` out of sight first: killed mid-delete, it is never taken for a
    checkpoint, and the next run removes the rest."""
    doomed = folder.with_name(f"{_DELETING_PREFIX}{folder.name}")
    if doomed.exists():  # left by an earlier kill
        shutil.rmtree(doomed)
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def discard_setup(run_dir: Path) -> None:
    """Delete RUN/frozen and VAE pre-training checkpoints: the set-up of a stopped run that
    a new one cannot reuse."""
    if frozen_dir(run_dir).is_dir():
        _delete(frozen_dir(run_dir))
    delete_vae_checkpoints(run_dir)


def delete_vae_checkpoints(run_dir: Path) -> None:
    """VAE pre-training is over (RUN/frozen holds its result): its checkpoints go."""
    folder = run_dir / "vae_pretrain"
    if folder.is_dir():
        _delete(folder)


@contextmanager
def writing_model(run_dir: Path) -> Iterator[Path]:
    """Yield the staging folder of RUN/model; once written, it replaces RUN/model."""
    with _writing(model_dir(run_dir)) as folder:
        yield folder


@contextmanager
def writing_frozen(run_dir: Path) -> Iterator[Path]:
    """Yield the staging folder of RUN/frozen; once written, it replaces RUN/frozen."""
    with _writing(frozen_dir(run_dir)) as folder:
        yield folder


@contextmanager
def _writing(final: Path) -> Iterator[Path]:
    temporary = staging_dir(final, fresh=True)
    yield temporary
    make_shareable(temporary)
    if final.exists():
        _delete(final)
    temporary.rename(final)


def remove_stale(run_dir: Path) -> list[Path]:
    """Clear what a killed run left: staging and half-deleted folders, temporary files, and
    checkpoint folders without their checkpoint.json. Call it before a run continues (and
    only then: a running trainer owns these names). Returns what was removed."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "vae_pretrain"):
        if not folder.is_dir():
            continue
        removed += remove_stale_temporaries(folder)
        for path in folder.iterdir():
            leftover = path.name.startswith((_STAGING_PREFIX, _DELETING_PREFIX)) or (
                folder != run_dir and _step_of(path) is not None and not is_checkpoint(path)
            )
            if leftover and path.is_dir():
                shutil.rmtree(path)
                removed.append(path)
    return removed


def has_progress(run_dir: Path) -> bool:
    """A run that got somewhere: a final model or a finished checkpoint."""
    return model_dir(run_dir).is_dir() or latest_checkpoint(run_dir) is not None


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
    checkpoint or a run folder).

    A run stopped before its first checkpoint has nothing to resume from: it starts again in
    its own folder (the trainer keeps what it can reuse), with or without ``--resume``; so
    does ``--output DIR --resume latest`` for a DIR that holds no run yet.
    """
    if resume is None:
        if output is None:
            return next_run_dir(TRAIN_RUNS / name), None
        if (output / RECIPE).exists() and has_progress(output):
            raise SegDiffInputError(
                f"{output} already holds a training run; continue it with --resume latest or "
                "choose another --output"
            )
        return output, None
    if resume == "latest":
        # An --output killed before it held anything resumes from nothing, as one killed
        # before its first checkpoint does.
        run_dir = output if output is not None else _newest_run(name)
        return run_dir, latest_checkpoint(run_dir)
    path = Path(resume)
    if is_checkpoint(path):
        return run_of(path), path
    checkpoint = latest_checkpoint(path)
    if checkpoint is None and not (path / RECIPE).is_file():
        raise SegDiffInputError(
            f"--resume {resume}: not a checkpoint (RUN/checkpoints/step-N with "
            "checkpoint.json) nor a run folder"
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
