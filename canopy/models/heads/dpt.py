"""The DPT head (Ranftl et al. 2021) as DINOv2's depth heads and Meta's canopy-height models publish it,
with one of two outputs: a height in metres per pixel (regression, the head ``canopy train`` fits) or
256 height bins (Meta's canopy-height models: v1, Tolan et al. 2024; CHMv2, Brandt et al. 2026).

Structure, as published: reassemble (class-token readout projected into the patch features, 1x1
projection, resize by 4, 2, 1, 1/2), 3x3 convs to the fusion width, four fusion blocks of
pre-activation residual units from coarse to fine, a 3x3 projection with ReLU (not in CHMv2), then a
depth head (3x3 conv, bilinear upsampling to the input's size, x2 for the published patch-16 models,
3x3 conv to 32 channels (CHMv2: 128), ReLU, 1x1 conv to the outputs). Module names are the published
ones (``reassemble_blocks``, ``convs``, ``fusion_blocks``, ``project``, ``conv_depth``; convolutions
wrapped as ``.conv``), so Meta's ``decode_head.*`` weights and CHMv2 head files load as they are.
Binned logits become weights and heights as :func:`bins_to_height` says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


Features = Sequence[tuple[torch.Tensor, torch.Tensor]]
"""Per layer: patch features (B, C, h, w) and class token (B, C)."""


@dataclass(frozen=True)
class HeightBins:
    """Height bins of a binned output: ``count`` centres from ``low`` to ``high``, times ``scale`` metres.

    ``strategy`` is ``linear`` (Meta v1) or ``chmv2_mixlog`` (CHMv2); see :func:`bins_to_height`.
    """

    count: int = 256
    low: float = 0.001
    high: float = 10.0
    scale: float = 10.0
    strategy: str = "linear"


class _Conv(nn.Module):
    """A conv wrapped as ``.conv``, the way the published checkpoints name it, optionally followed by ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, relu_after: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.relu_after = relu_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu_after else x


class _PreActUnit(nn.Module):
    """Two ReLU-then-3x3-conv layers plus the input."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = _Conv(channels, channels, 3, bias=bias)
        self.conv2 = _Conv(channels, channels, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _Fusion(nn.Module):
    """Add the skip (resized to the path if needed) through a unit, refine, upsample x2, project."""

    def __init__(self, channels: int, with_skip: bool, unit_bias: bool) -> None:
        super().__init__()
        self.res_conv_unit1 = _PreActUnit(channels, unit_bias) if with_skip else None
        self.res_conv_unit2 = _PreActUnit(channels, unit_bias)
        self.project = _Conv(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class _Reassemble(nn.Module):
    """Class-token readout, 1x1 projection and resize of each of the four layers.

    The readout folds the class token into every patch feature: ``project`` (concatenate, linear,
    GELU; as published), ``add``, or ``ignore``.
    """

    def __init__(self, embed_dim: int, channels: Sequence[int], readout: str) -> None:
        super().__init__()
        self.readout = readout
        self.projects = nn.ModuleList(_Conv(embed_dim, c, 1, bias=True) for c in channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], 4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
            ]
        )
        if readout == "project":
            self.readout_projects = nn.ModuleList(nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU()) for _ in channels)

    def forward(self, layers: Features) -> list[torch.Tensor]:
        out = []
        for i, (patches, cls) in enumerate(layers):
            if self.readout == "project":
                tokens = patches.flatten(2).transpose(1, 2)
                tokens = self.readout_projects[i](torch.cat((tokens, cls[:, None].expand_as(tokens)), dim=-1))
                x = tokens.transpose(1, 2).reshape(patches.shape)
            elif self.readout == "add":
                x = patches + cls[:, :, None, None]
            else:
                x = patches
            out.append(self.resize_layers[i](self.projects[i](x)))
        return out


class _DepthHead(nn.Module):
    """3x3 conv, upsampling to the input's size, 3x3 conv to ``hidden`` channels, ReLU, 1x1 conv to the outputs (``conv_depth.head.N``).

    The published head upsamples x2 (``head.1``), which is the input's size for patch-16 backbones;
    with align_corners the two give the same bits then. For patch-14 backbones, going straight to
    the input's size spares the last convolutions 30 % of their pixels and a resampling after them.
    """

    def __init__(self, channels: int, outputs: int, hidden: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(channels // 2, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, outputs, 1),
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.head[0](x), size=size, mode="bilinear", align_corners=True)
        return self.head[4](self.head[3](self.head[2](x)))


class DPTHead(nn.Module):
    """Reassemble four backbone layers, fuse them coarse to fine, and give a height per input pixel.

    Parameters
    ----------
    embed_dim
        Backbone token size.
    out_channels
        Channels of the four reassembled maps; default ``embed_dim`` / 8, / 4, / 2, / 1 (as published).
    features
        Fusion width (published: 256).
    readout
        How the class token enters the patch features: ``project`` (published), ``add`` or ``ignore``.
    bins
        None for a regression output (``scale * softplus`` of one channel, in metres), or the
        height bins of a binned output (Meta v1: 256 from 0.001 to 10, times 10).
    scale
        Metres per unit of the regression output's softplus, so its last layer works on numbers near 1.
    unit_bias
        Whether the fusion blocks' residual convolutions have a bias (CHMv2).
    project_after_fusion
        Whether the fused map goes through a 3x3 convolution with ReLU (``project``) before the depth
        head (DINOv2's and Meta v1's heads; not CHMv2's).
    hidden
        Channels of the depth head's last hidden layer (32; CHMv2 128).
    """

    def __init__(
        self,
        embed_dim: int,
        out_channels: Sequence[int] | None = None,
        features: int = 256,
        readout: str = "project",
        bins: HeightBins | None = None,
        scale: float = 10.0,
        unit_bias: bool = False,
        project_after_fusion: bool = True,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        channels = list(out_channels or [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim])
        self.bins, self.scale = bins, scale
        self.reassemble_blocks = _Reassemble(embed_dim, channels, readout)
        self.convs = nn.ModuleList(_Conv(c, features, 3, bias=False) for c in channels)
        self.fusion_blocks = nn.ModuleList(_Fusion(features, i > 0, unit_bias) for i in range(4))
        self.project = _Conv(features, features, 3, bias=True, relu_after=True) if project_after_fusion else None
        self.conv_depth = _DepthHead(features, 1 if bins is None else bins.count, hidden)

    def forward(self, layers: Features, size: tuple[int, int], moments: bool = False) -> torch.Tensor:
        """Height in metres (B, 1, H, W) for an input of ``size`` = (H, W); with ``moments``, (B, 2, H, W): the height
        and the variance of the predicted height distribution (zero for a regression output, which predicts none)."""
        maps = [conv(x) for conv, x in zip(self.convs, self.reassemble_blocks(layers))]
        out = self.fusion_blocks[0](maps[-1])
        for i in range(1, 4):
            out = self.fusion_blocks[i](out, maps[-(i + 1)])
        if self.project is not None:
            out = self.project(out)
        raw = self.conv_depth(out, size)
        if self.bins is None:
            height = softplus_metres(raw, self.scale)
            return with_zero_variance(height) if moments else height
        return bins_to_moments(raw, self.bins) if moments else bins_to_height(raw, self.bins)

    def set_output_bias(self, metres: float) -> None:
        """Start a regression head near a typical height (e.g. the training mean): training then fits the variation."""
        set_softplus_bias(self.conv_depth.head[-1], metres / self.scale)


def bin_centres(bins: HeightBins, device: torch.device | None = None) -> torch.Tensor:
    """The K bin centres before ``scale``: linear from ``low`` to ``high`` (v1), or for ``chmv2_mixlog``
    a blend whose weight moves from log spacing at the first bin to linear spacing at the last."""
    linear = torch.linspace(bins.low, bins.high, bins.count, device=device, dtype=torch.float32)
    if bins.strategy == "linear":
        return linear
    log = torch.exp(torch.linspace(math.log(bins.low), math.log(bins.high), bins.count, device=device, dtype=torch.float32))
    t = torch.linspace(1.0, 0.0, bins.count, device=device, dtype=torch.float32)
    return t * log + (1.0 - t) * linear


_MIXLOG_SHIFT = 1e-8  # CHMv2 adds this to the ReLU'd logits before normalising
_MIXLOG_EPS = 1e-12  # and floors sums and centres at this


def _bin_weights(logits: torch.Tensor, bins: HeightBins) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised bin weights (B, K, H, W) in float32 and the centres they weigh (K,), before ``scale``."""
    logits = logits.float()
    centres = bin_centres(bins, logits.device)
    if bins.strategy == "linear":
        weights = F.relu(logits) + 0.1
        return weights / weights.sum(dim=1, keepdim=True), centres
    weights = F.relu(logits) + _MIXLOG_SHIFT
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(_MIXLOG_EPS), centres.clamp_min(_MIXLOG_EPS)


def _bin_mean(weights: torch.Tensor, centres: torch.Tensor, bins: HeightBins) -> torch.Tensor:
    """The weights' mean centre (B, 1, H, W), before ``scale``."""
    if bins.strategy == "linear":
        return torch.einsum("bkhw,k->bhw", weights, centres)[:, None]
    return (weights * centres.view(1, -1, 1, 1)).sum(dim=1, keepdim=True).clamp_min(_MIXLOG_EPS)


def bins_to_height(logits: torch.Tensor, bins: HeightBins) -> torch.Tensor:
    """Heights (B, 1, H, W) from bin logits (B, K, H, W): weights from the logits, normalised, summed
    against the bin centres (:func:`bin_centres`), times ``bins.scale``.

    Weights are ReLU(logit) + 0.1 for ``linear`` bins (Meta v1), ReLU(logit) + 1e-8 for
    ``chmv2_mixlog`` (CHMv2, whose sums and centres are also floored at 1e-12). Always in float32,
    also under bf16/fp16 autocast: a bf16 height of 50 m is rounded to 0.25 m.
    """
    with torch.autocast(logits.device.type, enabled=False):
        weights, centres = _bin_weights(logits, bins)
        return bins.scale * _bin_mean(weights, centres, bins)


def bins_to_moments(logits: torch.Tensor, bins: HeightBins) -> torch.Tensor:
    """The mean and variance (B, 2, H, W; metres and square metres) of the height distribution the bins predict.

    The mean is :func:`bins_to_height`'s, bit for bit; the variance is the weights' spread about it,
    ``scale² · Σ w_k (c_k - mean)²``, summed about the mean rather than as E[c²] - mean² so that a
    narrow distribution keeps its digits. Always in float32.
    """
    with torch.autocast(logits.device.type, enabled=False):
        weights, centres = _bin_weights(logits, bins)
        mean = _bin_mean(weights, centres, bins)
        deviation = centres.view(1, -1, 1, 1) - mean
        variance = (weights * deviation * deviation).sum(dim=1, keepdim=True)
        return torch.cat([bins.scale * mean, bins.scale**2 * variance], dim=1)


def softplus_metres(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * softplus(x)`` in float32 whatever the autocast: a bf16 height of 50 m is rounded to 0.25 m."""
    with torch.autocast(x.device.type, enabled=False):
        return scale * F.softplus(x.float())


def with_zero_variance(height: torch.Tensor) -> torch.Tensor:
    """Heights (B, 1, H, W) as moments (B, 2, H, W) of a head that predicts no distribution: variance zero."""
    return torch.cat([height, torch.zeros_like(height)], dim=1)


def set_softplus_bias(layer: nn.Conv2d, value: float) -> None:
    """Set a layer's bias so that softplus of a zero input gives ``value``."""
    value = max(value, 1e-3)
    with torch.no_grad():
        layer.bias.fill_(value + math.log(-math.expm1(-value)))
