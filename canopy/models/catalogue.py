"""What ``canopy models`` shows: the registry with what the weights cache holds, and trained model files described."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from canopy.models.model_file import read_model_file
from canopy.models.registry import list_models
from canopy.models.weights import find_cached


@dataclass(frozen=True)
class CatalogueEntry:
    """A registry model and whether its weights are in the cache (``weights_path``: where)."""

    name: str
    patch_size: int
    embed_dim: int
    ground_resolution_m: float
    licence: str
    cached: bool
    weights_path: str | None
    description: str

    def to_dict(self) -> dict:
        """The entry as plain values, for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class ModelFileDescription:
    """A trained model file: the backbone and weights it was trained on, its head, grid and training record."""

    name: str
    file: str
    backbone: str
    backbone_weights: str
    head: str
    layers: list[int]
    patch_size: int
    embed_dim: int
    ground_resolution_m: float
    chip_size: int
    train_images: int | None
    val_images: int | None
    best_epoch: int | None
    validation: dict

    def to_dict(self) -> dict:
        """The description as plain values, for JSON."""
        return asdict(self)


def catalogue() -> list[CatalogueEntry]:
    """Every registry model, in name order, with what the weights cache holds of it.

    .. versionadded:: 0.3.0
    """
    entries = []
    for spec in list_models():
        cached = find_cached(spec)
        entries.append(CatalogueEntry(spec.name, spec.backbone.patch_size, spec.backbone.embed_dim, spec.ground_resolution,
                                      spec.licence, cached is not None, str(cached) if cached else None, spec.description))
    return entries


def describe_model_file(path: str | os.PathLike) -> ModelFileDescription:
    """What a trained model file (from ``canopy train``) records.

    Raises
    ------
    ModelFileError
        As :func:`~canopy.models.model_file.read_model_file`.

    .. versionadded:: 0.3.0
    """
    trained = read_model_file(path)
    spec, training = trained.spec, trained.training
    return ModelFileDescription(
        spec.name, str(Path(path)), spec.backbone_name, trained.backbone_weights, spec.head.type, list(spec.head.layers),
        spec.backbone.patch_size, spec.backbone.embed_dim, spec.ground_resolution, spec.chip_size,
        training.get("train_images"), training.get("val_images"), training.get("best_epoch"), trained.validation,
    )
