"""segdiff: open-vocabulary semantic segmentation with a fine-tuned Stable Diffusion 2."""

__version__ = "0.1.0"
