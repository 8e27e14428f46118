"""Content Attention Module (CAM): order-aware class conditioning (docs/method.md).

Each class becomes one cross-attention token: the text encoder's sentence embedding of its
prompt plus a learned embedding of the gray level the class is drawn at. Cross-attention is
blind to token order, so the level embedding is the only thing that tells the UNet which
class goes to which level. The level path starts at zero: an untrained CAM hands the UNet
SD's own text embeddings.
"""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from segdiff import depth_coding


class ContentAttentionModule(ModelMixin, ConfigMixin):
    r"""The UNet's context from the class embeddings of a class list, one token per class.

    Args:
        cross_attention_dim (`int`, defaults to 1024):
            Width of the text embeddings and of the UNet's cross-attention (1024 for SD2).
        num_frequencies (`int`, defaults to 8):
            Sine/cosine frequencies of the gray level fed to the level embedding.
        none_token (`bool`, defaults to `False`):
            Append a learned "none" token (at gray 0) after the class tokens of every context.
            A saved CAM without this key has none.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self, cross_attention_dim: int = 1024, num_frequencies: int = 8, none_token: bool = False
    ):
        super().__init__()
        # Frequencies up to 2**(n-1) separate adjacent levels even at K = 255.
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(num_frequencies), persistent=False
        )
        self.level_mlp = nn.Sequential(
            nn.Linear(2 * num_frequencies + 1, cross_attention_dim),
            nn.SiLU(),
            nn.Linear(cross_attention_dim, cross_attention_dim),
        )
        nn.init.zeros_(self.level_mlp[-1].weight)
        nn.init.zeros_(self.level_mlp[-1].bias)
        self.none_embedding = (
            nn.Parameter(torch.randn(cross_attention_dim) * 0.02) if none_token else None
        )

    def level_embedding(self, levels: torch.Tensor) -> torch.Tensor:
        """Embed gray levels given on the 0..1 scale, any shape -> shape + (dim,)."""
        angles = levels.unsqueeze(-1).float() * self.frequencies
        features = torch.cat([levels.unsqueeze(-1).float(), angles.sin(), angles.cos()], dim=-1)
        return self.level_mlp(features.to(self.dtype))

    def none_token(self) -> torch.Tensor:
        """The "none" token ``(dim,)``: the none embedding plus the level embedding of gray 0."""
        gray_0 = self.level_embedding(torch.zeros((), device=self.device))
        return self.none_embedding.to(self.dtype) + gray_0

    def none_token_index(self, num_class_tokens: int) -> int | None:
        """Where the none token sits in a context whose class lists are padded to
        ``num_class_tokens``: right after them; None for a CAM without one."""
        return num_class_tokens if self.config.none_token else None

    def forward(self, class_embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class embeddings of each sample, ``(K_i, dim)`` in class-list order, to a padded
        context ``(B, K_max, dim)`` and its attention mask ``(B, K_max)`` (1 = real token);
        with a none token both have one more position, K_max, always attended to."""
        batch, dim = len(class_embeddings), self.config.cross_attention_dim
        k_max = max(len(e) for e in class_embeddings)
        levels = torch.zeros(batch, k_max, device=self.device)
        context = torch.zeros(batch, k_max, dim, device=self.device, dtype=self.dtype)
        mask = torch.zeros(batch, k_max, device=self.device, dtype=torch.bool)
        for i, embeddings in enumerate(class_embeddings):
            k = len(embeddings)
            levels[i, :k] = torch.from_numpy(depth_coding.gray_levels(k) / 255.0)
            context[i, :k] = embeddings.to(device=self.device, dtype=self.dtype)
            mask[i, :k] = True
        context = context + self.level_embedding(levels) * mask.unsqueeze(-1)
        if self.none_embedding is not None:
            context = torch.cat([context, self.none_token().expand(batch, 1, dim)], dim=1)
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        return context, mask
