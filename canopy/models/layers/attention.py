"""Multi-head self-attention, in one of two arithmetics a checkpoint's reference code may use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Self-attention with one fused ``qkv`` projection, as in DINOv2's checkpoints.

    Parameters
    ----------
    dim, num_heads
        Token size and number of heads.
    qkv_bias
        Whether ``qkv`` has a bias.
    explicit
        Compute ``softmax((q * scale) @ kᵀ) @ v`` step by step, the order of operations of Meta's
        canopy-height code, instead of PyTorch's fused ``scaled_dot_product_attention`` (which
        DINOv2 and ``transformers`` use). The two agree to rounding, but in an int8 dynamically
        quantised model the next Linear re-quantises its input, turning last-bit differences into
        whole quantisation steps: matching the reference's arithmetic is what keeps it exact.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, explicit: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.explicit = explicit
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the token axis of (B, N, C) and return (B, N, C)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.explicit:
            attn = (qkv[0] * self.scale) @ qkv[1].transpose(-2, -1)
            out = attn.softmax(dim=-1) @ qkv[2]
        else:
            out = F.scaled_dot_product_attention(*qkv.unbind(0))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
