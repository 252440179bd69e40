"""Meta's aerial normalisation: stretch aerial imagery to the radiometry of the satellite imagery the
canopy-height models were trained on.

A small CNN (published with Meta's canopy-height models, module names as in their checkpoint)
looks at 256 px tiles of aerial RGB in [0, 1] and predicts the 5th and 95th percentiles per band that
satellite imagery of the same place would have. canopy runs it on tiles sampled over the whole
region, averages its predictions, and maps the region's own 5th-95th percentiles onto them with
one affine per band: statistics for the whole region, never per chip.
"""

from __future__ import annotations

import numpy as np
import torch

from canopy.errors import ImageryError
from canopy.grid import OutputGrid
from canopy.imagery.mosaic import read_mosaic
from canopy.models.aerial_normalizer import TILE, QuantileRegressor


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
