"""Building DINOv2 and DINOv3 backbones and filling them with weights."""

from __future__ import annotations

import logging
import os

from canopy.errors import RandomWeightsWarning, warn
from canopy.models.checkpoint import StateDict, built_empty, load_into, read_state_dict, to_meta_layout
from canopy.models.dinov3_checkpoint import dinov3_to_meta_layout
from canopy.models.registry import ModelSpec, get_model_spec
from canopy.models.vision_transformer import VisionTransformer, build_vision_transformer
from canopy.models.weights import ProgressCallback, ResolvedWeights, resolve_weights

log = logging.getLogger(__name__)


def build_backbone(spec: ModelSpec, resolved: ResolvedWeights, state: StateDict | None = None) -> VisionTransformer:
    """Build a model's backbone and fill it from resolved weights, in eval mode.

    Parameters
    ----------
    spec
        The model.
    resolved
        A checkpoint file, or a seeded random initialisation (which warns).
    state
        The backbone's tensors when the caller has already read them from ``resolved.path``.

    Returns
    -------
    VisionTransformer

    Raises
    ------
    WeightsMismatchError, CheckpointFormatError, UnsafeCheckpointError
        If the file is not a checkpoint for this backbone, or could only be read unsafely.
    """
    if resolved.is_random:
        model = build_vision_transformer(spec.backbone)
        warn(
            f"{spec.name} uses RANDOM weights ({resolved.identity}): the heights it gives mean nothing; "
            "use this only for tests and benchmarks.",
            RandomWeightsWarning,
        )
        model.init_random(resolved.seed or 0)
    else:
        path = resolved.backbone_path or resolved.path
        state = state if state is not None else read_state_dict(path)
        if spec.backbone.family == "dinov3":
            state = dinov3_to_meta_layout(state, spec.backbone)
        else:
            state = to_meta_layout(state)
        model = built_empty(lambda: build_vision_transformer(spec.backbone))
        load_into(model, state, expected=_variant_label(spec), source=str(path))
        log.info("loaded %s backbone from %s (sha256 %s)", spec.name, path, resolved.backbone_identity)
    return model.eval()


def _variant_label(spec: ModelSpec) -> str:
    """A name and shape summary of a backbone for messages, e.g. ``dinov2_vits14 (ViT 384d, 12 blocks)``."""
    b = spec.backbone
    registers = f", {b.num_register_tokens} registers" if b.num_register_tokens else ""
    return f"{spec.name} (embed {b.embed_dim}, {b.depth} blocks, patch {b.patch_size}{registers})"


def load_backbone(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
) -> VisionTransformer:
    """Load a DINOv2 or DINOv3 backbone by its registry name.

    Parameters
    ----------
    name
        A registry name, e.g. ``dinov2_vits14``, ``dinov2_vitg14_reg`` or ``dinov3_vitl16_sat``.
    weights
        A checkpoint path (Meta ``.pth`` or Hugging Face safetensors, or a folder holding one;
        the layout is detected from the keys);
        ``"random"`` or ``"random(seed=N)"`` for a seeded random initialisation, which warns; or
        None for the cache, then a verified download.
    offline
        Forbid downloads; None reads ``CANOPY_OFFLINE``.
    progress
        Download progress callback, called with (bytes done, total bytes or None).

    Returns
    -------
    VisionTransformer
        In eval mode, with DINOv2's ``forward_features`` and ``get_intermediate_layers``.

    Raises
    ------
    UnknownModelError
        If ``name`` is not in the registry.
    WeightsNotFoundError, OfflineError, DownloadError
        If the weights cannot be found or fetched.
    WeightsMismatchError
        If the checkpoint is for another variant or has missing or unexpected keys.
    """
    spec = get_model_spec(name)
    return build_backbone(spec, resolve_weights(spec, weights, offline=offline, progress=progress))
