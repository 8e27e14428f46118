"""`segdiff train`: recipes in, a run folder with checkpoints and a trained model out."""
