"""Attention supervision (``train.attention_loss``): tell cross-attention where each class is.

The diffusion loss teaches class-to-token binding only indirectly, through the gray level
the mask is drawn at. This loss teaches it directly: every cross-attention layer (``attn2``
of the UNet's transformer blocks) records its attention probabilities during the training
forward pass, and each query's attention, averaged over heads, is compared with the class
layout of its cell by a soft cross-entropy. The target of a cell is the share of its pixels
of each listed class (the one-hot label map average-pooled to the layer's grid); pixels of
no listed class target the CAM's none token when it has one, and nothing otherwise.

The recording processor computes attention explicitly only while gradients are on (the
training forward pass, and its recomputation under gradient checkpointing); under
``torch.no_grad()`` (validation, inference) it hands over to the fast processor it replaced.
"""

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from segdiff.depth_coding import NONE_LABEL
from segdiff.errors import SegDiffInputError

CROSS_ATTENTION = "attn2.processor"
"""How diffusers names the cross-attention processors of its transformer blocks."""


class RecordingCrossAttention:
    """A diffusers attention processor that hands its head-averaged probabilities
    ``(B, queries, tokens)`` to ``supervision`` while gradients are on."""

    def __init__(self, fast, supervision: "AttentionSupervision"):
        self.fast = fast
        self.supervision = supervision

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if not torch.is_grad_enabled() or encoder_hidden_states is None:
            return self.fast(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs
            )
        batch, tokens = encoder_hidden_states.shape[:2]
        attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.supervision.record(probs.unflatten(0, (batch, attn.heads)).mean(dim=1))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class AttentionSupervision:
    """The attention loss of one UNet: installs the recording processors on its
    cross-attention layers and scores what they record."""

    def __init__(self, unet: UNet2DConditionModel, weight: float, layers: str = "all"):
        if layers not in ("all", "top"):
            raise ValueError(f"layers must be 'all' or 'top', got {layers!r}")
        self.weight = weight
        self.layers = layers
        self.recorded: list[torch.Tensor] = []
        self._recording = False
        processors = unet.attn_processors
        if not any(name.endswith(CROSS_ATTENTION) for name in processors):
            raise SegDiffInputError(
                "train.attention_loss needs cross-attention layers, and this UNet has none "
                "(no CrossAttn block types)"
            )
        unet.set_attn_processor(
            {
                name: RecordingCrossAttention(processor, self)
                if name.endswith(CROSS_ATTENTION)
                else processor
                for name, processor in processors.items()
            }
        )

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the cross-attention of the forward passes run inside."""
        self.recorded = []
        self._recording = True
        try:
            yield
        finally:
            self._recording = False

    def record(self, probs: torch.Tensor) -> None:
        if self._recording:
            self.recorded.append(probs)

    def loss(
        self,
        labels: torch.Tensor,
        none_index: int | None,
        latent_size: tuple[int, int],
    ) -> torch.Tensor:
        """Mean over the recorded layers (all, or the finest) of the soft cross-entropy
        between each query's attention and its cell's class layout. ``labels``: (B, H, W)
        label maps of the batch (NONE_LABEL = none); ``none_index``: the CAM's none token in
        the context, if any; ``latent_size``: the UNet input's (height, width)."""
        if not self.recorded:
            raise RuntimeError("no cross-attention was recorded: run the UNet in recording()")
        finest = max(probs.shape[1] for probs in self.recorded)
        used = [p for p in self.recorded if self.layers == "all" or p.shape[1] == finest]
        targets: dict[tuple[int, int], torch.Tensor] = {}
        losses = []
        for probs in used:
            grid = layer_grid(probs.shape[1], latent_size)
            if grid not in targets:
                targets[grid] = attention_targets(labels, probs.shape[2], none_index, grid)
            log_probs = probs.float().clamp_min(1e-6).log()
            losses.append(-(targets[grid] * log_probs).sum(dim=-1).mean())
        return torch.stack(losses).mean()


def layer_grid(queries: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a layer with ``queries`` positions in a UNet whose input is
    ``latent_size``: each downsampling halves the sides, rounding up."""
    height, width = latent_size
    while height * width > queries:
        height, width = -(-height // 2), -(-width // 2)
    if height * width != queries:
        raise ValueError(f"no grid of {latent_size} halved has {queries} positions")
    return height, width


def attention_targets(
    labels: torch.Tensor, tokens: int, none_index: int | None, grid: tuple[int, int]
) -> torch.Tensor:
    """(B, h * w, tokens): the share of each cell's pixels of every context token's class.
    Label k is token k; "none" is token ``none_index``, or no token (a cell of none then has
    no target). Rows sum to 1 where every pixel has a token."""
    index = labels.long()
    spare = tokens  # a slot for pixels without a token, dropped below
    index = torch.where(index == NONE_LABEL, spare if none_index is None else none_index, index)
    one_hot = F.one_hot(index, tokens + 1).permute(0, 3, 1, 2).float()
    shares = F.adaptive_avg_pool2d(one_hot, grid)[:, :tokens]
    return shares.flatten(2).transpose(1, 2)
