"""One pre-norm transformer block."""

from __future__ import annotations

import torch
from torch import nn

from canopy.models.layers.attention import Attention
from canopy.models.layers.layer_scale import LayerScale


class Block(nn.Module):
    """Pre-norm attention and feed-forward, each with LayerScale and a residual connection.

    Parameters
    ----------
    dim, num_heads
        Token size and number of attention heads.
    ffn
        The feed-forward module (``Mlp`` or ``SwiGLUFFN``), injected so variants share this block.
    layerscale_init
        Initial LayerScale value.
    explicit_attention
        Use the step-by-step attention arithmetic (see :class:`Attention`).
    """

    def __init__(
        self, dim: int, num_heads: int, ffn: nn.Module, layerscale_init: float = 1.0, explicit_attention: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, explicit=explicit_attention)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ffn
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output for tokens (B, N, C)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))
