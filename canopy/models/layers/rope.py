"""Rotary position embeddings (RoPE) on a 2-D patch grid, as DINOv3 uses them."""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_periods(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """DINOv3's RoPE periods for a head of ``head_dim``: ``base ** (2i / (head_dim / 2))`` for i < head_dim / 4, float32."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


class RopePositionEmbedding(nn.Module):
    """Sines and cosines of each patch's position, axis by axis, for rotating queries and keys.

    A patch centre's row and column are each scaled to [-1, 1] by the grid's own height and width
    (DINOv3's ``separate`` normalisation), so any chip shape gets positions on the same range. The
    periods are a buffer (``periods``, saved in Meta's checkpoints and read from them); a new
    module fills them from ``base`` as DINOv3 does.

    Parameters
    ----------
    head_dim
        Size of one attention head; a multiple of 4 (a quarter of it per axis and per sine/cosine).
    base
        The base the periods are powers of.
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("periods", rope_periods(head_dim, base))

    def forward(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sin, cos), each (rows * cols, head_dim) in float32, for a row-major patch grid."""
        dd = {"device": self.periods.device, "dtype": torch.float32}
        coords_h = torch.arange(0.5, rows, **dd) / rows
        coords_w = torch.arange(0.5, cols, **dd) / cols
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the last ``sin.shape[-2]`` tokens of ``x`` (B, heads, N, D); the class and register tokens before them stay.

    Computed in float32 and cast back, as DINOv3 does.
    """
    prefix = x.shape[-2] - sin.shape[-2]
    patches = x[..., prefix:, :].float()
    first, second = patches.chunk(2, dim=-1)
    rotated = patches * cos + torch.cat((-second, first), dim=-1) * sin
    return torch.cat((x[..., :prefix, :], rotated.to(x.dtype)), dim=-2)
