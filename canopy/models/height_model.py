"""A backbone and a height head behind the model's own input normalisation."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from canopy.errors import RandomWeightsWarning
from canopy.models.backbone import build_backbone
from canopy.models.heads import build_head
from canopy.models.registry import ModelSpec, get_model_spec
from canopy.models.vision_transformer import DinoVisionTransformer
from canopy.models.weights import ProgressCallback, resolve_weights


class HeightModel(nn.Module):
    """Frozen backbone plus height head: RGB in [0, 1] in, metres out.

    Parameters
    ----------
    spec
        The model record: normalisation, head type and the backbone layers the head reads.
    backbone
        The (frozen) backbone.
    head
        The height head; built from ``spec.head`` when omitted.
    """

    def __init__(self, spec: ModelSpec, backbone: DinoVisionTransformer, head: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone.requires_grad_(False).eval()
        self.head = head if head is not None else build_head(spec.head, backbone.embed_dim)
        norm = spec.normalization
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1), persistent=False)

    @property
    def patch_size(self) -> int:
        """Chip sides must be multiples of this."""
        return self.backbone.patch_size

    def init_head_random(self, seed: int = 0) -> None:
        """Re-initialise the head's parameters from a fixed seed (tests and benchmarks)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.head.modules():
                if hasattr(module, "reset_parameters") and module is not self.head:
                    module.reset_parameters()

    def features(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Normalise RGB in [0, 1] and return the head's input: (patch map, class token) per layer."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return list(
            self.backbone.get_intermediate_layers(
                x, n=list(self.spec.head.layers), reshape=True, return_class_token=True, norm=True
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Height in metres (B, 1, H, W) for RGB images (B, 3, H, W) scaled to [0, 1].

        Raises
        ------
        PatchSizeError
            If H or W is not a multiple of the patch size.
        """
        return self.head(self.features(x), tuple(x.shape[-2:]))


@dataclass(frozen=True)
class LoadedModel:
    """A ready height model and the identities of its weights, for output tags."""

    model: HeightModel
    spec: ModelSpec
    backbone_weights: str
    head_weights: str


def load_height_model(
    name: str,
    weights: str | os.PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
) -> LoadedModel:
    """Load a registry model as backbone plus height head.

    Parameters
    ----------
    name
        A registry name; a DINOv2 backbone's name means that backbone with its DPT head.
    weights
        Backbone weights: a path, ``random``/``random(seed=N)``, or None for the cache or a download.
    offline
        Forbid downloads; None reads ``CANOPY_OFFLINE``.
    progress
        Download progress callback.

    Returns
    -------
    LoadedModel
        The head is seeded-random until trained heads exist for the model; that warns loudly.

    Raises
    ------
    UnknownModelError, WeightsNotFoundError, OfflineError, DownloadError, WeightsMismatchError
        As :func:`canopy.models.load_backbone`.
    """
    spec = get_model_spec(name)
    resolved = resolve_weights(spec, weights, offline=offline, progress=progress)
    model = HeightModel(spec, build_backbone(spec, resolved))
    seed = resolved.seed or 0
    model.init_head_random(seed)
    if not resolved.is_random:
        warnings.warn(
            f"The height head of {name} has no trained weights (random(seed={seed})): its heights mean nothing "
            "until a head is trained on lidar.",
            RandomWeightsWarning,
            stacklevel=2,
        )
    return LoadedModel(model.eval(), spec, resolved.identity, f"random(seed={seed})")
