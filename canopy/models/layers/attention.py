"""Multi-head self-attention, in one of two arithmetics a checkpoint's reference code may use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from canopy.models.layers.rope import apply_rope

Rope = tuple[torch.Tensor, torch.Tensor]
"""(sin, cos) of the patch tokens' positions, each (patches, head size)."""


class MaskedBiasLinear(nn.Linear):
    """A Linear whose bias is multiplied by a stored ``bias_mask`` (DINOv3's fused ``qkv``, whose
    mask zeroes the keys' third of the bias)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__(dim_in, dim_out)
        mask = torch.ones(dim_out)
        mask[dim_out // 3 : 2 * dim_out // 3] = 0.0
        self.register_buffer("bias_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x Wᵀ + bias * bias_mask``."""
        return F.linear(x, self.weight, self.bias * self.bias_mask.to(self.bias.dtype))


class Attention(nn.Module):
    """Self-attention with one fused ``qkv`` projection, as in DINOv2's and DINOv3's checkpoints.

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
    mask_k_bias
        Multiply the ``qkv`` bias by a stored mask (DINOv3).
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, explicit: bool = False, mask_k_bias: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.explicit = explicit
        self.qkv = MaskedBiasLinear(dim, dim * 3) if mask_k_bias else nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        """Attend over the token axis of (B, N, C) and return (B, N, C); ``rope`` rotates the patch tokens' queries and keys."""
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.explicit:
            out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
