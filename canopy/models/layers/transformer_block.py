"""One pre-norm transformer block."""

from __future__ import annotations

import torch
from torch import nn

from canopy.models.layers.attention import Attention, Rope
from canopy.models.layers.layer_scale import LayerScale


class TransformerBlock(nn.Module):
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
    norm_eps
        LayerNorm epsilon.
    mask_k_bias
        Mask the attention's key bias (DINOv3).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn: nn.Module,
        layerscale_init: float = 1.0,
        explicit_attention: bool = False,
        norm_eps: float = 1e-6,
        mask_k_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, explicit=explicit_attention, mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ffn
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(self, x: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        """Return the block's output for tokens (B, N, C), with rotary positions when ``rope`` is given."""
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
