"""A linear height head: one 1x1 projection of the concatenated layers, upsampled bilinearly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from canopy.models.heads.dpt import set_softplus_bias, softplus_metres, with_zero_variance


class LinearHead(nn.Module):
    """Height from a linear map of patch features and class tokens of ``n_layers`` layers.

    The 1x1 projection is applied before upsampling; both are linear, so this equals projecting
    upsampled features at a fraction of the memory.
    """

    def __init__(self, embed_dim: int, n_layers: int, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale
        self.norm = nn.BatchNorm2d(2 * embed_dim * n_layers)
        self.proj = nn.Conv2d(2 * embed_dim * n_layers, 1, 1)

    def forward(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], size: tuple[int, int],
                moments: bool = False) -> torch.Tensor:
        """Height in metres (B, 1, H, W) for an input of ``size`` = (H, W); with ``moments`` (B, 2, H, W), variance zero."""
        parts = []
        for patches, cls in layers:
            parts += [patches, cls[:, :, None, None].expand_as(patches)]
        x = self.proj(self.norm(torch.cat(parts, dim=1)))
        height = softplus_metres(F.interpolate(x, size=size, mode="bilinear", align_corners=False), self.scale)
        return with_zero_variance(height) if moments else height

    def set_output_bias(self, metres: float) -> None:
        """Start the head near a typical height (e.g. the training mean): training then fits the variation."""
        set_softplus_bias(self.proj, metres / self.scale)
