"""Models: the registry, DINOv2 and DINOv3 backbones, height heads and weight resolution."""

from canopy.models.backbone import build_backbone, load_backbone
from canopy.models.height_model import HeightModel
from canopy.models.registry import ModelSpec, get_model_spec, list_models
from canopy.models.vision_transformer import DinoVisionTransformer, Dinov3VisionTransformer, VisionTransformer, build_vision_transformer
from canopy.cache import cache_dir
from canopy.models.weights import ResolvedWeights, resolve_weights

__all__ = [
    "DinoVisionTransformer",
    "Dinov3VisionTransformer",
    "HeightModel",
    "ModelSpec",
    "ResolvedWeights",
    "VisionTransformer",
    "build_backbone",
    "build_vision_transformer",
    "cache_dir",
    "get_model_spec",
    "list_models",
    "load_backbone",
    "resolve_weights",
]
