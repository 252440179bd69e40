"""Building blocks of the vision transformer, one small module each."""

from canopy.models.layers.attention import Attention
from canopy.models.layers.layer_scale import LayerScale
from canopy.models.layers.mlp import Mlp, SwiGLUFFN
from canopy.models.layers.patch_embed import PatchEmbed
from canopy.models.layers.transformer_block import TransformerBlock

__all__ = ["Attention", "LayerScale", "Mlp", "PatchEmbed", "SwiGLUFFN", "TransformerBlock"]
