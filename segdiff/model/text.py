"""Class names to sentence embeddings, computed once per (text encoder, prompt).

What a valid class list is belongs to `segdiff.class_lists`."""

from collections.abc import Sequence

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from segdiff.errors import SegDiffInputError

DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."


class ClassEmbedder:
    """Sentence embeddings (the EOS token's final hidden state) of ``template.format(name)``.

    The text encoder is frozen in segdiff, so an embedding never changes: each prompt is
    encoded once and kept on the encoder's device.
    """

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        template: str = DEFAULT_PROMPT_TEMPLATE,
    ):
        if "{}" not in template:
            raise SegDiffInputError(f"a prompt template needs a '{{}}' slot, got {template!r}")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.template = template
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, names: Sequence[str]) -> torch.Tensor:
        """``(K, dim)`` embeddings in the order of ``names``."""
        prompts = [self.template.format(name) for name in names]
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        encoder = self.text_encoder
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            tokens = self.tokenizer(
                chunk,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            output = encoder(tokens.input_ids.to(encoder.device))
            for prompt, embedding in zip(chunk, output.pooler_output, strict=True):
                self._cache[prompt] = embedding
        return torch.stack([self._cache[p] for p in prompts])
