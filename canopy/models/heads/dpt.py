"""A DPT head (Ranftl et al. 2021) as DINOv2's depth heads use it, regressing height in metres."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from canopy.models.layers.pointwise import PointwiseConv2d

Features = Sequence[tuple[torch.Tensor, torch.Tensor]]
"""Per layer: patch features (B, C, h, w) and class token (B, C)."""


class Readout(nn.Module):
    """Fold the class token into every patch feature: project, add, or ignore it."""

    def __init__(self, embed_dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.project = (
            nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU()) if mode == "project" else nn.Identity()
        )

    def forward(self, patches: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Return patch features (B, C, h, w) with the class token folded in."""
        if self.mode == "ignore":
            return patches
        cls_map = cls[:, :, None, None].expand_as(patches)
        if self.mode == "add":
            return patches + cls_map
        joined = torch.cat((patches, cls_map), dim=1).permute(0, 2, 3, 1)
        return self.project(joined).permute(0, 3, 1, 2)


class ResidualConvUnit(nn.Module):
    """ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the refined features."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Merge a coarser path with a skip connection, refine, and upsample to the next size."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(features)
        self.unit = ResidualConvUnit(features)
        self.out_conv = PointwiseConv2d(features, features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        """Fuse ``x`` with ``skip`` (same size) and resample the result to ``size``."""
        if skip is not None:
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """Reassemble four backbone layers at 4x, 2x, 1x and 1/2x the token grid, fuse them coarse to
    fine, and regress a non-negative height per input pixel.

    Parameters
    ----------
    embed_dim
        Backbone token size.
    features
        Width of the fusion path.
    out_channels
        Channels of the four reassembled maps; default ``embed_dim`` / 8, / 4, / 2, / 1.
    readout
        How the class token enters the patch features: ``project``, ``add`` or ``ignore``.
    scale
        Metres per unit of the final softplus, so the last layer works on numbers near 1.
    """

    def __init__(
        self,
        embed_dim: int,
        features: int = 256,
        out_channels: Sequence[int] | None = None,
        readout: str = "project",
        scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        channels = list(out_channels or [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim])
        self.readouts = nn.ModuleList(Readout(embed_dim, readout) for _ in range(4))
        self.projects = nn.ModuleList(PointwiseConv2d(embed_dim, c) for c in channels)
        self.resizes = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], 4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in channels)
        self.fusions = nn.ModuleList(FusionBlock(features) for _ in range(4))
        self.output = nn.ModuleDict(
            {
                "conv1": nn.Conv2d(features, features // 2, 3, padding=1),
                "conv2": nn.Conv2d(features // 2, 32, 3, padding=1),
                "conv3": PointwiseConv2d(32, 1),
            }
        )

    def forward(self, layers: Features, size: tuple[int, int]) -> torch.Tensor:
        """Height in metres (B, 1, H, W) for an input of ``size`` = (H, W).

        Parameters
        ----------
        layers
            Four (patch features (B, C, h, w), class token (B, C)) pairs, shallow to deep.
        size
            Height and width of the input image in pixels.
        """
        maps = []
        for i, (patches, cls) in enumerate(layers):
            x = self.readouts[i](patches, cls)
            x = self.resizes[i](self.projects[i](x))
            maps.append(self.layer_rn[i](x))
        path = None
        for i in (3, 2, 1, 0):
            target = maps[i - 1].shape[-2:] if i else tuple(2 * s for s in maps[0].shape[-2:])
            path = self.fusions[i](maps[i] if path is None else path, None if path is None else maps[i], target)
        x = self.output["conv1"](path)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return softplus_metres(self.output["conv3"](F.relu(self.output["conv2"](x))), self.scale)

    def set_output_bias(self, metres: float) -> None:
        """Start the head near a typical height (e.g. the training mean): training then fits the variation."""
        set_softplus_bias(self.output["conv3"], metres / self.scale)


def softplus_metres(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * softplus(x)`` in float32 whatever the autocast: a bf16 height of 50 m is rounded to 0.25 m."""
    with torch.autocast(x.device.type, enabled=False):
        return scale * F.softplus(x.float())


def set_softplus_bias(layer: nn.Conv2d, value: float) -> None:
    """Set a layer's bias so that softplus of a zero input gives ``value``."""
    value = max(value, 1e-3)
    with torch.no_grad():
        layer.bias.fill_(value + math.log(-math.expm1(-value)))
