"""Per-channel residual scaling (CaiT's LayerScale), as DINOv2 uses it."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply each channel by a learned ``gamma``."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the last axis."""
        return x * self.gamma
