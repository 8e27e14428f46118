"""Benchmark evaluation: metrics (detectron2 convention), benchmark rules, sharded scoring."""
