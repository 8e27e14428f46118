"""Shared fixtures: tiny models built from configs; nothing is ever downloaded."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipeline():
    """An untrained tiny SegDiffPipeline (seeded), processing at 32 px."""
    from segdiff.model.pipeline import SegDiffPipeline
    from segdiff.model.tiny import build_tiny_components

    pipe = SegDiffPipeline(
        **build_tiny_components(seed=0),
        default_processing_resolution=32,
        default_denoising_steps=2,
        default_ensemble_size=2,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_pipeline, tmp_path_factory):
    """The tiny pipeline saved as a segdiff model folder."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory):
    """A tiny Stable Diffusion 2-layout folder (4-channel UNet, no CAM)."""
    from segdiff.model.tiny import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd2"), seed=0)
