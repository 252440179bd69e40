"""The network of Meta's aerial normalisation: a small CNN that predicts, from 256 px tiles of aerial RGB in [0, 1],
the 5th and 95th percentiles per band that satellite imagery of the same place would have (module names as in
Meta's checkpoint), and its loading. :mod:`canopy.imagery.aerial_normalization` applies it to a region."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from canopy.errors import WeightsMismatchError
from canopy.models.checkpoint import load_into, read_state_dict
from canopy.models.registry import WeightSource
from canopy.models.weights import ProgressCallback, resolve_weights

TILE = 256
FILTERS = (8, 16, 32, 64, 64, 128)


@dataclass(frozen=True)
class NormalizerSpec:
    """Where the published normalisation network's weights are; keeps the fields weight resolution reads."""

    name: str = "meta-chm-v1-aerial-normalization"
    weights: tuple[WeightSource, ...] = (
        WeightSource(
            "https://dataforgood-fb-data.s3.amazonaws.com/forests/v1/models/saved_checkpoints/"
            "aerial_normalization_quantiles_predictor.ckpt"
        ),
    )
    meta_files: tuple[str, ...] = ()
    obtain: str | None = None


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv, batch norm, ReLU, 3x3 conv ("same" padding)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))


class QuantileRegressor(nn.Module):
    """Six conv blocks with max pooling, then four linear layers to 6 values: 5th and 95th
    percentiles of R, G, B (in that order), for a 256 x 256 RGB tile in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)
        self.input_layer = _conv_block(3, FILTERS[0])
        for i in range(1, 6):
            setattr(self, f"conv_block{i}", _conv_block(FILTERS[i - 1], FILTERS[i]))
        self.fc1 = nn.Sequential(nn.Linear(FILTERS[5] * (TILE // 32) ** 2, 64), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.fc3 = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.fc4 = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Percentiles (B, 6) for tiles (B, 3, 256, 256)."""
        x = self.pool(self.input_layer(x))
        for i in range(1, 5):
            x = self.pool(getattr(self, f"conv_block{i}")(x))
        x = self.conv_block5(x).flatten(1)
        return self.fc4(self.fc3(self.fc2(self.fc1(x))))


def load_normalizer(
    weights: str | os.PathLike | None = None, *, offline: bool | None = None, progress: ProgressCallback | None = None
) -> QuantileRegressor:
    """The published normalisation network, resolved like model weights (path, cache, download).

    The published file is a training-framework checkpoint whose ``state_dict`` holds the network
    under ``backbone.``; it is read with ``weights_only=True`` like every checkpoint.

    Raises
    ------
    WeightsNotFoundError, OfflineError, DownloadError, UnsafeCheckpointError, WeightsMismatchError
        As for model weights.
    """
    resolved = resolve_weights(NormalizerSpec(), weights, offline=offline, progress=progress)
    if resolved.is_random:
        raise WeightsMismatchError("The aerial normalisation network has no random mode; pass its checkpoint.")
    state = read_state_dict(resolved.path)
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    network = QuantileRegressor()
    load_into(network, state, expected="the aerial normalisation network", source=str(resolved.path))
    return network.eval()
