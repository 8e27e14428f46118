"""segdiff: open-vocabulary semantic segmentation with a fine-tuned Stable Diffusion 2.

``from segdiff import SegDiffPipeline`` works; the model stack (torch, diffusers) is imported
only when first used, so ``segdiff --help`` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["ContentAttentionModule", "SegDiffPipeline", "SegDiffOutput"]


def __getattr__(name: str):
    if name in ("SegDiffPipeline", "SegDiffOutput"):
        from segdiff.model import pipeline

        return getattr(pipeline, name)
    if name == "ContentAttentionModule":
        from segdiff.model.cam import ContentAttentionModule

        return ContentAttentionModule
    raise AttributeError(f"module 'segdiff' has no attribute {name!r}")
