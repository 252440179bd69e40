"""Meta's aerial normalisation: stretch aerial imagery to the radiometry of the satellite imagery the
canopy-height models were trained on.

A small CNN (published with Meta's canopy-height models, module names as in their checkpoint)
looks at 256 px tiles of aerial RGB in [0, 1] and predicts the 5th and 95th percentiles per band that
satellite imagery of the same place would have. canopy runs it on tiles sampled over the whole
region, averages its predictions, and maps the region's own 5th-95th percentiles onto them with
one affine per band: statistics for the whole region, never per chip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from canopy.errors import ImageryError, WeightsMismatchError
from canopy.grid import OutputGrid
from canopy.imagery.mosaic import read_mosaic
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


def region_affine(network: QuantileRegressor, sources: list, grid: OutputGrid, max_tiles: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-band gain and offset that stretch the region's imagery to satellite-like radiometry.

    Up to ``max_tiles`` 256 px tiles spread evenly over the grid (skipping tiles less than half
    covered) go through the network and its predicted percentiles are averaged; the region's own
    5th-95th percentiles, from a read of the whole grid decimated to at most a million pixels,
    are mapped onto them.

    Returns
    -------
    (gain, offset)
        Arrays of 3: ``rgb' = gain * rgb + offset``.

    Raises
    ------
    ImageryError
        If no tile over the region has enough imagery.
    """
    rows = max(1, min(int(np.sqrt(max_tiles)), grid.height // TILE or 1))
    cols = max(1, min(max_tiles // rows, grid.width // TILE or 1))
    tiles = []
    for i in range(rows):
        for j in range(cols):
            top = int((grid.height - TILE) * (i + 0.5) / rows) if grid.height > TILE else (grid.height - TILE) // 2
            left = int((grid.width - TILE) * (j + 0.5) / cols) if grid.width > TILE else (grid.width - TILE) // 2
            patch = read_mosaic(sources, grid.subgrid(top, left, TILE, TILE))
            if patch.valid.mean() < 0.5:
                continue
            tiles.append(patch.rgb)
    if not tiles:
        raise ImageryError("No 256 px tile over the region is at least half covered by imagery; aerial normalisation needs one.")
    with torch.no_grad():
        predicted = network(torch.from_numpy(np.stack(tiles))).mean(dim=0).numpy().astype(np.float64)
    target_low, target_high = predicted[:3], predicted[3:]
    values = _region_pixels(sources, grid)
    own_low, own_high = np.percentile(values, 5, axis=1), np.percentile(values, 95, axis=1)
    if np.any(own_high <= own_low) or np.any(target_high <= target_low):
        raise ImageryError("The region's imagery (or the network's prediction for it) has a band with no spread; aerial normalisation cannot stretch it.")
    gain = (target_high - target_low) / (own_high - own_low)
    return gain, target_low - gain * own_low


def _region_pixels(sources: list, grid: OutputGrid, max_pixels: int = 1_000_000) -> np.ndarray:
    """Valid RGB values (3, N) in [0, 1] over the whole grid, read at a resolution keeping N <= max_pixels."""
    patch = read_mosaic(sources, grid.coarsened(max_pixels))
    return patch.rgb[:, patch.valid]
