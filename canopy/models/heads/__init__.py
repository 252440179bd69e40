"""Dense height heads that turn backbone features into metres per pixel."""

from torch import nn

from canopy.models.heads.dpt import DPTHead, HeightBins
from canopy.models.heads.linear import LinearHead
from canopy.models.registry import HeadSpec

__all__ = ["DPTHead", "HeightBins", "LinearHead", "build_head"]


def build_head(spec: HeadSpec, embed_dim: int) -> nn.Module:
    """Build the head a :class:`~canopy.models.registry.HeadSpec` describes for a backbone of ``embed_dim``."""
    if spec.type in ("dpt", "dpt-bins"):
        bins = None
        if spec.type == "dpt-bins":
            bins = HeightBins(spec.bins, *spec.bins_range, spec.bins_scale, spec.bins_strategy)
        return DPTHead(
            embed_dim,
            spec.out_channels,
            spec.features,
            spec.readout,
            bins,
            unit_bias=spec.unit_bias,
            project_after_fusion=spec.project_after_fusion,
            hidden=spec.hidden_channels,
        )
    return LinearHead(embed_dim, n_layers=len(spec.layers))
