"""Building blocks of the vision transformer, one small module each."""

from canopy.models.layers.attention import Attention
from canopy.models.layers.block import Block
from canopy.models.layers.layer_scale import LayerScale
from canopy.models.layers.mlp import Mlp, SwiGLUFFN
from canopy.models.layers.patch_embed import PatchEmbed

__all__ = ["Attention", "Block", "LayerScale", "Mlp", "PatchEmbed", "SwiGLUFFN"]
