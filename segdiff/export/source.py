"""What `segdiff export MODEL` can export, and where its weights, recipe and metrics live.

MODEL is one of:
- a training run folder (``recipe.yaml`` with ``model/`` or ``checkpoints/``): its final
  ``model/`` folder, or its latest checkpoint while there is no final model yet;
- a segdiff model folder (``model_index.json`` of a SegDiffPipeline), e.g. ``RUN/model`` or an
  earlier export; a hub id of one works too;
- a training checkpoint folder (``RUN/checkpoints/step-N/`` with ``checkpoint.json``): its
  trainable weights joined with the run's frozen components. Its ``training_state/``
  (optimizer and so on) is never read, so it never reaches an export.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from segdiff import run_folder
from segdiff.errors import SegDiffInputError
from segdiff.model.loading import check_is_segdiff_model
from segdiff.model.pipeline import SegDiffPipeline

EXPECTED = (
    "expected a training run folder (recipe.yaml with model/ or checkpoints/), a segdiff model "
    "folder (model_index.json with a 'cam' component), a checkpoint folder "
    "(RUN/checkpoints/step-N with checkpoint.json) or a hub id"
)
WEIGHTED_COMPONENTS = ("vae", "text_encoder", "unet", "cam")


@dataclass(frozen=True)
class ModelSource:
    """A resolved MODEL argument: where to load from and what is known about its training."""

    name: str
    """MODEL as given, for messages and the model card."""
    weights: Path | str
    """The model folder, checkpoint folder or hub id the pipeline loads from."""
    checkpoint_step: int | None = None
    """Set when ``weights`` is a training checkpoint rather than a model folder."""
    recipe: Path | None = None
    metrics: Path | None = None
    training_data: Path | None = None
    """What the run trained on (``training_data.json``: the prepared dataset's meta.json)."""

    @property
    def read_paths(self) -> list[Path]:
        """Every local file or folder an export reads: it must not replace any of them."""
        paths = [self.recipe, self.metrics, self.training_data]
        if isinstance(self.weights, Path):
            paths.append(self.weights)
        if self.checkpoint_step is not None:
            paths.append(run_folder.frozen_dir(run_folder.run_of(Path(self.weights))))
        return [path for path in paths if path is not None]

    def load(self) -> SegDiffPipeline:
        """The pipeline in fp32 on the CPU: exports cast from full precision."""
        if self.checkpoint_step is None:
            return SegDiffPipeline.from_pretrained(self.weights, dtype=torch.float32)
        from segdiff.training.checkpoints import load_checkpoint_pipeline

        if not run_folder.is_checkpoint(Path(self.weights)):
            raise run_folder.checkpoint_removed(Path(self.weights))
        pipe = load_checkpoint_pipeline(self.weights)
        if any(getattr(pipe, name).dtype != torch.float32 for name in WEIGHTED_COMPONENTS):
            pipe.to(torch.float32)  # frozen parts saved in half precision by a mixed run
        return pipe

    def describe(self) -> str:
        if self.checkpoint_step is not None:
            return f"training checkpoint at step {self.checkpoint_step} ({self.weights})"
        return f"model {self.weights}"

    def describe_shareably(self) -> str:
        """`describe` without this machine's paths: folders by their name only."""
        if isinstance(self.weights, str):
            return f"model `{self.weights}`"  # a hub id
        if self.checkpoint_step is not None:
            run = run_folder.run_of(self.weights).name
            return f"training checkpoint at step {self.checkpoint_step} of the run `{run}`"
        return f"model folder `{self.weights.name}`"


def resolve_source(model: str | Path) -> ModelSource:
    """Work out what kind of thing ``model`` is; SegDiffInputError when it is none of them."""
    path = Path(model)
    if not path.exists():
        if str(model).count("/") == 1 and not str(model).startswith((".", "/")):
            check_is_segdiff_model(str(model))
            return ModelSource(name=str(model), weights=str(model))
        raise SegDiffInputError(f"{model} does not exist; {EXPECTED}.")
    if not path.is_dir():
        raise SegDiffInputError(f"{model} is a file, not a folder; {EXPECTED}.")
    path = path.resolve()
    if run_folder.is_checkpoint(path):
        return _checkpoint_source(str(model), path)
    if (path / "model_index.json").is_file():
        return _model_source(str(model), path)
    if run_folder.is_run(path):
        return _run_source(str(model), path)
    raise SegDiffInputError(f"{model} is not something segdiff can export; {EXPECTED}.")


def _run_source(name: str, run: Path) -> ModelSource:
    model = run_folder.model_dir(run)
    if (model / "model_index.json").is_file():
        return _model_source(name, model)
    checkpoint = run_folder.latest_checkpoint(run)
    if checkpoint is None:
        raise SegDiffInputError(
            f"training run {run} has neither a final model/ nor a finished checkpoint "
            "(checkpoints/step-N/checkpoint.json) yet; nothing to export."
        )
    return _checkpoint_source(name, checkpoint)


def _model_source(name: str, model: Path) -> ModelSource:
    check_is_segdiff_model(model)
    recipe, metrics, training_data = _records_near(model)
    return ModelSource(
        name=name, weights=model, recipe=recipe, metrics=metrics, training_data=training_data
    )


def _checkpoint_source(name: str, checkpoint: Path) -> ModelSource:
    try:
        step = run_folder.checkpoint_step(checkpoint)
    except SegDiffInputError:
        if run_folder.is_checkpoint(checkpoint):
            raise
        raise run_folder.checkpoint_removed(checkpoint) from None
    run = run_folder.run_of(checkpoint)
    missing = run_folder.missing_parts(checkpoint)
    if missing and not run_folder.is_checkpoint(checkpoint):
        raise run_folder.checkpoint_removed(checkpoint)
    if missing:
        raise SegDiffInputError(
            f"checkpoint {checkpoint} is incomplete: {', '.join(map(str, missing))} missing. A "
            "checkpoint needs unet/, cam/ and model_index.json, and its run needs frozen/ with "
            "vae/, text_encoder/, tokenizer/ and scheduler/."
        )
    recipe = run / run_folder.RECIPE
    training_data = run / run_folder.TRAINING_DATA
    return ModelSource(
        name=name,
        weights=checkpoint,
        checkpoint_step=step,
        recipe=recipe if recipe.is_file() else None,
        metrics=_checkpoint_metrics(checkpoint, run, step),
        training_data=training_data if training_data.is_file() else None,
    )


def _records_near(model: Path) -> tuple[Path | None, Path | None, Path | None]:
    """Recipe, metrics and training data of a model folder: its own copies (an earlier
    export, the bundled model), else those of the run it is the final model of."""
    run = run_folder.run_of_model(model)
    found = []
    for filename in (run_folder.RECIPE, run_folder.METRICS, run_folder.TRAINING_DATA):
        candidates = [model / filename] + ([run / filename] if run else [])
        found.append(next((c for c in candidates if c.is_file()), None))
    return found[0], found[1], found[2]


def _checkpoint_metrics(checkpoint: Path, run: Path, step: int) -> Path | None:
    """Metrics that describe this checkpoint: its own file, or the run's last validation
    when that names the same step. The run's metrics of another step would mislead."""
    own = checkpoint / run_folder.METRICS
    if own.is_file():
        return own
    run_metrics = run / run_folder.METRICS
    if run_metrics.is_file() and _step_of_metrics(run_metrics) == step:
        return run_metrics
    return None


def _step_of_metrics(path: Path) -> int | None:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SegDiffInputError(f"cannot read {path} as JSON: {err}") from err
    return metrics.get("step") if isinstance(metrics, dict) else None
