"""Cross-attention over a short class context, fast on a CPU.

segdiff's UNet attends to few tokens: one per class (and the CAM's none token), often under
25. On a CPU, torch's fused attention kernel handles such short key lists poorly and
erratically: at 4,096 queries with heads of 4 channels it takes longer for 9 keys than for 32.
Computing the scores with the keys on the second-to-last axis, ``(batch, heads, keys,
queries)``, turns the two products into wide matrix products and the softmax into one over a
short axis across long contiguous rows, 3-6x faster there (benchmarks/README.md). The result is
the same attention, equal to the fused kernel's up to float rounding.
"""

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

MAX_KEYS_FOR_KEYS_FIRST = 24
"""Longest context computed keys-first on a CPU; at 32 keys the fused kernel was faster."""


class FewKeysAttnProcessor(AttnProcessor2_0):
    """diffusers' default attention processor, except for cross-attention on a CPU over at most
    `MAX_KEYS_FOR_KEYS_FIRST` keys, which it computes keys-first (module docstring)."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        if not _computes_keys_first(attn, hidden_states, encoder_hidden_states):
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        batch, queries, _ = hidden_states.shape
        keys = encoder_hidden_states.shape[1]
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        heads = attn.heads
        head_dim = key.shape[-1] // heads

        # (batch, heads, head_dim, queries) and (batch, heads, keys, head_dim): scores come out
        # (batch, heads, keys, queries), the layout the short softmax is fast in.
        query = query.view(batch, queries, heads, head_dim).permute(0, 2, 3, 1)
        key = key.view(batch, keys, heads, head_dim).transpose(1, 2) * head_dim**-0.5
        scores = torch.matmul(key, query)
        if attention_mask is not None:
            bias = attn.prepare_attention_mask(attention_mask, keys, batch)
            scores = scores + bias.view(batch, heads, -1, keys).transpose(-1, -2)
        weights = scores.softmax(dim=-2)
        value = value.view(batch, keys, heads, head_dim).permute(0, 2, 3, 1)
        out = torch.matmul(value, weights)  # (batch, heads, head_dim, queries)
        out = out.permute(0, 3, 1, 2).reshape(batch, queries, heads * head_dim)

        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _computes_keys_first(
    attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None
) -> bool:
    """Cross-attention on a CPU over a short context, in a plain attention layer (no norms
    inside that the default processor would apply)."""
    return (
        encoder_hidden_states is not None
        and hidden_states.device.type == "cpu"
        and hidden_states.ndim == 3
        and encoder_hidden_states.shape[1] <= MAX_KEYS_FOR_KEYS_FIRST
        and attn.spatial_norm is None
        and attn.group_norm is None
        and attn.norm_q is None
        and attn.norm_k is None
    )


def use_few_keys_attention(unet: UNet2DConditionModel) -> None:
    """Give every attention layer of ``unet`` that runs diffusers' default processor the
    `FewKeysAttnProcessor`; processors installed for another purpose (training's attention
    recording, a user's own) stay."""
    processors = unet.attn_processors
    if any(type(processor) is AttnProcessor2_0 for processor in processors.values()):
        unet.set_attn_processor(
            {
                name: FewKeysAttnProcessor() if type(processor) is AttnProcessor2_0 else processor
                for name, processor in processors.items()
            }
        )
