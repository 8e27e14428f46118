"""The training loop (docs/method.md), one code path for one process or many.

``segdiff train`` runs it in one process; ``accelerate launch -m segdiff train`` runs the same
code in several (DDP), each on its own slice of every global batch. `Trainer` sets up the data,
the model, the run folder and what a resumed run restores, then repeats one `TrainingStep`
(`segdiff.training.step`) and checkpoints, validates and logs between steps. The main process
writes the run folder (see `segdiff.run_folder`); every process saves its own random
state in each checkpoint so that a resumed run continues exactly as the original would have.
"""

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from diffusers import AutoencoderKL, DDIMScheduler
from diffusers.utils import logging as diffusers_logging
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from segdiff import run_folder
from segdiff.console import console
from segdiff.data.prepared import PreparedSplit, open_prepared
from segdiff.distributed import process_state
from segdiff.errors import DiskFullError, SegDiffInputError
from segdiff.evaluation.report import metrics_dict
from segdiff.imageio import save_json
from segdiff.memory import check_fits, format_bytes
from segdiff.model.from_sd import components_from_stable_diffusion
from segdiff.model.pipeline import SegDiffPipeline
from segdiff.model.tiny import build_tiny_components, load_vae
from segdiff.recipes import Recipe, same_recipe, save_recipe
from segdiff.training import checkpoints
from segdiff.training.batches import (
    Batch,
    BatchOrder,
    ClassListSettings,
    LatentBatch,
    SampleSettings,
    TrainingSamples,
    collate,
)
from segdiff.training.latent_cache import LatentCache, collate_latents
from segdiff.training.step import TrainingStep
from segdiff.training.vae_pretrain import pretrain_vae, vae_optimizer
from segdiff.training.validation import validate, validation_benchmark


class TrainingDiverged(SegDiffInputError):
    """The loss became NaN or infinite: the recipe (learning rate, precision) does not train."""


def train(recipe: Recipe, run_dir: str | Path, resume: str | Path | None = None) -> Path:
    """Train ``recipe`` into ``run_dir`` (from checkpoint ``resume`` if given); returns the
    final model folder ``run_dir/model``."""
    return Trainer(recipe, Path(run_dir), Path(resume) if resume else None).run()


def build_components(recipe: Recipe) -> dict[str, Any]:
    """The untrained pipeline components the recipe starts from (the VAE of model.vae
    pretrained)."""
    model = recipe.model
    if model.kind != "tiny":
        return components_from_stable_diffusion(model.pretrained, none_token=model.none_token)
    vae = load_vae(model.vae) if model.vae is not None else None
    options = {"none_token": model.none_token, "vae": vae}
    try:
        with torch.device("meta"):  # sized first, nothing allocated
            networks = build_tiny_components(recipe.seed, model.tiny, **options)
    except SegDiffInputError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as err:
        raise SegDiffInputError(f"model.tiny overrides do not build a model: {err!r}") from err
    modules = [part for part in networks.values() if isinstance(part, nn.Module)]
    parameters = sum(p.numel() for module in modules for p in module.parameters())
    check_fits(
        4 * parameters,
        torch.device("cpu"),
        f"the tiny model of the recipe ({parameters:,} parameters)",
        "lower the widths in model.tiny.",
    )
    return build_tiny_components(recipe.seed, model.tiny, **options)


class Trainer:
    """One run: set-up (data, model, run folder, what a resumed run restores), then the loop
    of `TrainingStep` calls with logging, checkpoints and validation between them."""

    def __init__(self, recipe: Recipe, run_dir: Path, resume: Path | None):
        self.recipe = recipe
        self.run_dir = run_dir
        process_state()  # several CPU processes share gloo, as in eval
        diffusers_logging.disable_progress_bar()  # no bar per saved weights file
        self.accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision)
        self.is_main = self.accelerator.is_main_process
        if recipe.data.root is None:
            raise SegDiffInputError(
                "the recipe has no data.root: give the prepared dataset folder, e.g. "
                "'segdiff train RECIPE.yaml data.root=PATH' (made by 'segdiff prepare')"
            )
        self.train_split = open_prepared(recipe.data.root, recipe.data.train_split)
        self.val_split: PreparedSplit | None = None
        if recipe.validation.num_images:
            self.val_split = open_prepared(recipe.data.root, recipe.data.val_split)
            validation_benchmark(self.val_split)
        self.samples = TrainingSamples(self.train_split, self._sample_settings())
        if self.is_main:
            run_folder.remove_stale(run_dir)
        self.info = run_folder.read_checkpoint_info(resume) if resume else {}
        self.step = self.info.get("step", 0)

        components = self._components(resume)
        self._check_timesteps(components["scheduler"])
        self.frozen = {name: components[name] for name in run_folder.FROZEN}
        self.train_step = TrainingStep.from_recipe(components, recipe, self.accelerator)
        if resume is not None:
            self._restore(resume / run_folder.TRAINING_STATE)
        self.cache = self._latent_cache() if recipe.data.cache_variants else None
        self.position = self.info.get("data_position", 0)
        self.batches = self._batches(self.position)
        self.writer = SummaryWriter(str(run_folder.logs_dir(run_dir))) if self.is_main else None

    # -- setup -----------------------------------------------------------------------------

    def _sample_settings(self, crop: int | None = None) -> SampleSettings:
        data = self.recipe.data
        return SampleSettings(
            resolution=data.resolution,
            crop=crop or data.resolution,
            scale=(data.scale[0], data.scale[1]),
            hflip=data.hflip,
            class_lists=ClassListSettings(
                max_classes=data.max_classes,
                max_negatives=data.max_negatives,
                min_negatives=data.min_negatives,
                drop_present=data.drop_present,
                made_up_negatives=data.made_up_negatives,
            ),
            seed=self.recipe.seed,
        )

    def _components(self, resume: Path | None) -> dict[str, Any]:
        """Frozen parts and trainable weights: from the run folder when resuming; else built
        (every process alike), the VAE pre-trained by the main process if the recipe says
        so, and the frozen parts saved once to RUN/frozen.

        A run stopped before its first checkpoint starts again here, keeping its RUN/frozen
        (or its VAE pre-training checkpoint) when the recipe is the same. Either way training
        then starts from the same random state, so it ends as an uninterrupted run would.
        """
        if resume is not None:
            unet, cam = checkpoints.load_trainable(resume)
            return {**checkpoints.load_frozen(self.run_dir), "unet": unet, "cam": cam}
        components = build_components(self.recipe)
        if self.is_main:
            self._start_run_folder()
            if checkpoints.has_frozen(self.run_dir):
                console.print(f"Reusing the frozen components in {self.run_dir / 'frozen'}")
                components.update(checkpoints.load_frozen(self.run_dir))
            else:
                if self.recipe.vae_pretrain.steps:
                    self._pretrain_vae(components["vae"])
                checkpoints.save_frozen(self.run_dir, components)
            run_folder.delete_vae_checkpoints(self.run_dir)  # RUN/frozen holds their result
        self.accelerator.wait_for_everyone()
        if not self.is_main and self.recipe.vae_pretrain.steps:
            components["vae"] = AutoencoderKL.from_pretrained(
                run_folder.frozen_dir(self.run_dir) / "vae", use_safetensors=True
            )
        torch.manual_seed(self.recipe.seed)
        return components

    def _start_run_folder(self) -> None:
        """Save the recipe; what a stopped run of another recipe left is of no use."""
        saved = self.run_dir / run_folder.RECIPE
        if saved.is_file() and not same_recipe(saved, self.recipe):
            console.print(f"{self.run_dir} was started with another recipe: starting it over")
            run_folder.discard_setup(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(self.recipe, saved)
        meta = json.loads((self.train_split.root / "meta.json").read_text(encoding="utf-8"))
        record = {**meta, "split": self.train_split.split}
        save_json(record, self.run_dir / run_folder.TRAINING_DATA)

    def _pretrain_vae(self, vae: AutoencoderKL) -> None:
        """Pre-train on the main process, checkpointing every tenth of the steps."""
        recipe = self.recipe.vae_pretrain
        device = self.accelerator.device
        vae.to(device)
        optimizer, schedule = vae_optimizer(vae, recipe)
        latest = run_folder.latest_vae_checkpoint(self.run_dir)
        start = run_folder.checkpoint_step(latest) if latest else 0
        every = max(1, recipe.steps // 10)
        samples = TrainingSamples(self.train_split, self._sample_settings(recipe.crop))
        order = BatchOrder(len(samples), recipe.batch_size, 0, 1, self.recipe.seed + 1, start)
        # Starting the loader draws from the global random generator, so it comes before
        # the checkpoint restores that generator's state, as it came before step 1.
        batches = iter(DataLoader(samples, batch_sampler=order, collate_fn=collate))
        if latest is not None:
            checkpoints.load_vae_checkpoint(latest, vae, optimizer, schedule)
            console.print(f"Resuming VAE pre-training at step {start} of {recipe.steps}")
        with _progress() as progress:
            task = progress.add_task(
                "VAE pre-training", total=recipe.steps, completed=start, loss=float("nan")
            )

            def on_step(step: int, loss: float) -> None:
                progress.update(task, completed=step, loss=loss)
                if step % every == 0 and step < recipe.steps:
                    final = run_folder.vae_checkpoint_dir(self.run_dir, step)
                    temporary = run_folder.staging_dir(final, fresh=True)
                    checkpoints.write_vae_checkpoint(temporary, vae, optimizer, schedule, step)
                    run_folder.publish_checkpoint(temporary, final, keep=1)

            scaling = pretrain_vae(
                vae,
                (batch.to(device) for batch in batches),
                recipe,
                optimizer,
                schedule,
                start_step=start,
                on_step=on_step,
            )
        console.print(f"VAE pre-trained; latent scaling factor {scaling:.4f}")

    def _check_timesteps(self, scheduler: DDIMScheduler) -> None:
        count = scheduler.config.num_train_timesteps
        if self.recipe.train.noise.max_timestep >= count:
            raise SegDiffInputError(
                f"train.noise.max_timestep must be below the scheduler's {count} timesteps"
            )

    def _restore(self, state: Path) -> None:
        """Raw weights (the checkpoint's unet/ and cam/ hold the EMA ones when EMA is on),
        optimizer, LR schedule and this process's random state."""
        step = self.train_step
        if step.ema is not None:
            step.ema.optimization_step = self.info.get("ema_step", 0)
        raw = checkpoints.load_raw_weights(state)
        if raw is not None:
            step.denoiser.load_state_dict(raw)
        checkpoints.load_training_state(state, step.optimizer, step.lr_scheduler)
        checkpoints.load_rng(state, self.accelerator.process_index, step.generator)

    def _latent_cache(self) -> LatentCache:
        """Every process encodes the whole cache (deterministic: a resumed run rebuilds it)."""
        variants = self.recipe.data.cache_variants
        total = variants * len(self.samples)
        start = time.perf_counter()
        with _progress(disable=not self.is_main, loss=False) as progress:
            task = progress.add_task("encoding the latent cache", total=total)
            cache = LatentCache.build(
                self.samples,
                self.train_step.vae,
                variants,
                self.recipe.train.batch_size,
                on_progress=lambda done, _: progress.update(task, completed=done),
            )
        if self.is_main:
            console.print(
                f"Latent cache: {variants} variants x {len(self.samples)} images, "
                f"{format_bytes(cache.nbytes)} in memory, encoded in "
                f"{time.perf_counter() - start:.0f} s"
            )
        return cache

    def _batches(self, position: int) -> Iterator[Batch | LatentBatch]:
        data = self.recipe.data
        order = BatchOrder(
            len(self.samples),
            self.recipe.train.batch_size,
            self.accelerator.process_index,
            self.accelerator.num_processes,
            self.recipe.seed,
            position,
        )
        self.order = order
        if self.cache is not None:  # in memory already: no worker processes
            return iter(DataLoader(self.cache, batch_sampler=order, collate_fn=collate_latents))
        loader = DataLoader(
            self.samples,
            batch_sampler=order,
            collate_fn=collate,
            num_workers=data.workers,
            persistent_workers=data.workers > 0,
            pin_memory=self.accelerator.device.type == "cuda",
        )
        return iter(loader)

    # -- training --------------------------------------------------------------------------

    def run(self) -> Path:
        total = self.recipe.train.steps
        settings = self.recipe.train
        validate_every = self.recipe.validation.every
        window: list[float] = []
        attention_window: list[float] = []
        with _progress(disable=not self.is_main) as progress:
            task = progress.add_task(
                "training", total=total, completed=self.step, loss=float("nan")
            )
            while self.step < total:
                loss = self._optimizer_step()
                self.step += 1
                window.append(loss)
                if self.train_step.attention_loss is not None:
                    attention_window.append(self.train_step.attention_loss)
                progress.update(task, completed=self.step, loss=loss)
                if self.step % settings.log_every == 0 or self.step == total:
                    self._log_scalars(window, attention_window)
                    window, attention_window = [], []
                if self.step % settings.checkpoint_every == 0 or self.step == total:
                    self._save_checkpoint()
                if validate_every and self.step % validate_every == 0 and self.step < total:
                    self._validate()
        self._validate()
        model = self._save_model()
        if self.writer is not None:
            self.writer.close()
        return model

    def _optimizer_step(self) -> float:
        """One optimizer step over ``gradient_accumulation`` micro-batches; the mean loss of
        all processes. Raises TrainingDiverged, the weights untouched, if it is not finite."""
        accumulation = self.recipe.train.gradient_accumulation
        micro_batches = [next(self.batches) for _ in range(accumulation)]
        self.position += accumulation
        mean = self.train_step(micro_batches)
        if not math.isfinite(mean):
            latest = run_folder.latest_checkpoint(self.run_dir)
            raise TrainingDiverged(
                f"the training loss became {mean} at step {self.step + 1}: training diverged. "
                "Lower optim.lr, lengthen optim.warmup_steps or use mixed_precision=bf16/no, "
                + (f"then resume from {latest}." if latest else "then start again.")
            )
        return mean

    def _log_scalars(self, losses: list[float], attention_losses: list[float]) -> None:
        """Means over the steps since the last log; the attention loss (unweighted) apart."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", float(np.mean(losses)), self.step)
            if attention_losses:
                mean = float(np.mean(attention_losses))
                self.writer.add_scalar("train/attention_loss", mean, self.step)
            self.writer.add_scalar(
                "train/lr", self.train_step.lr_scheduler.get_last_lr()[0], self.step
            )

    # -- weights out -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _inference_weights(self) -> Iterator[None]:
        """The weights to save or validate: the EMA ones when EMA is on; eval mode."""
        denoiser, ema = self.train_step.denoiser, self.train_step.ema
        parameters = list(denoiser.parameters())
        if ema is not None:
            ema.store(parameters)
            ema.copy_to(parameters)
        denoiser.eval()
        try:
            yield
        finally:
            denoiser.train()
            if ema is not None:
                ema.restore(parameters)

    def _pipeline(self) -> SegDiffPipeline:
        return SegDiffPipeline(
            unet=self.train_step.denoiser.unet,
            cam=self.train_step.denoiser.cam,
            **self.frozen,
            **asdict(self.recipe.model.pipeline_defaults()),
        )

    def _save_checkpoint(self) -> None:
        final = run_folder.checkpoint_dir(self.run_dir, self.step)
        temporary = run_folder.staging_dir(final, fresh=self.is_main)
        if self.is_main:
            (temporary / run_folder.TRAINING_STATE).mkdir()
        self.accelerator.wait_for_everyone()
        step = self.train_step
        checkpoints.save_rng(
            temporary / run_folder.TRAINING_STATE, self.accelerator.process_index, step.generator
        )
        fingerprints = gather_object([checkpoints.weights_fingerprint(step.denoiser)])
        if len(set(fingerprints)) > 1:
            raise RuntimeError(f"processes hold different weights at step {self.step}")
        if self.is_main:
            raw = None
            if step.ema is not None:  # a copy: the EMA weights are swapped in place below
                raw = {
                    k: v.detach().to("cpu", copy=True)
                    for k, v in step.denoiser.state_dict().items()
                }
            info = {
                "step": self.step,
                "epoch": self.order.epoch_of(self.position),
                "data_position": self.position,
                "samples_seen": self.position
                * self.recipe.train.batch_size
                * self.accelerator.num_processes,
                "num_processes": self.accelerator.num_processes,
                "ema_step": step.ema.optimization_step if step.ema is not None else None,
                "weights_sha256": fingerprints,
            }
            try:
                with self._inference_weights():
                    checkpoints.write_checkpoint(
                        temporary, self._pipeline(), step.optimizer, step.lr_scheduler, raw, info
                    )
            except DiskFullError:
                shutil.rmtree(temporary, ignore_errors=True)  # gives back the space it took
                raise
        self.accelerator.wait_for_everyone()
        if self.is_main:
            run_folder.publish_checkpoint(temporary, final, self.recipe.train.checkpoint_limit)
        self.accelerator.wait_for_everyone()

    def _save_model(self) -> Path:
        """RUN/model: the frozen parts copied from RUN/frozen plus the trained weights."""
        if self.is_main:
            with self._inference_weights():
                checkpoints.save_model(self.run_dir, self._pipeline())
        self.accelerator.wait_for_everyone()
        return run_folder.model_dir(self.run_dir)

    def _validate(self) -> None:
        """Score the val subset on every process (sharded), log and save the metrics."""
        settings = self.recipe.validation
        if self.val_split is None:
            return
        with self._inference_weights(), self.accelerator.autocast():
            pipeline = self._pipeline()
            pipeline.set_progress_bar_config(disable=True)
            result = validate(
                pipeline,
                self.val_split,
                settings.num_images,
                settings.denoising_steps,
                settings.ensemble_size,
                settings.overlays,
                self.recipe.seed,
            )
        if not self.is_main:
            return
        metrics = metrics_dict(result, {"step": self.step, "split": self.val_split.split})
        save_json(metrics, self.run_dir / run_folder.METRICS)
        console.print(
            f"step {self.step}: val mIoU {metrics['mIoU']:.1f}, pixel accuracy "
            f"{metrics['pixel_accuracy']:.1f} ({result.scored} images)"
        )
        for key in ("mIoU", "pixel_accuracy", "mean_accuracy", "fwIoU"):
            self.writer.add_scalar(f"val/{key}", metrics[key], self.step)
        for name, panel in result.samples:
            self.writer.add_image(f"val/{name}", panel, self.step, dataformats="HWC")
        self.writer.flush()


def _progress(disable: bool = False, loss: bool = True) -> Progress:
    """A progress bar; with ``loss``, its tasks carry a ``loss`` field that it shows."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}" if loss else ""),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
    )
