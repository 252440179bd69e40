"""Dense height heads that turn backbone features into metres per pixel."""

from torch import nn

from canopy.models.heads.binned_dpt import BinnedDPTHead
from canopy.models.heads.dpt import DPTHead
from canopy.models.heads.linear import LinearHead
from canopy.models.registry import HeadSpec

__all__ = ["BinnedDPTHead", "DPTHead", "LinearHead", "build_head"]


def build_head(spec: HeadSpec, embed_dim: int) -> nn.Module:
    """Build the head a :class:`~canopy.models.registry.HeadSpec` describes for a backbone of ``embed_dim``."""
    if spec.type == "dpt-bins":
        return BinnedDPTHead(embed_dim, out_channels=spec.out_channels, features=spec.features)
    if spec.type == "dpt":
        return DPTHead(embed_dim, features=spec.features, out_channels=spec.out_channels, readout=spec.readout)
    return LinearHead(embed_dim, n_layers=len(spec.layers))
