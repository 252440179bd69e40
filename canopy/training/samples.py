"""Training samples: backbone features of imagery chips, paired with reference heights on the reference's grid.

For each (imagery, reference) pair the model runs on a grid that shares the reference's CRS and
origin, at the reference's pixel size divided by a whole factor ``f`` chosen to come closest to
the model's ground resolution; the prediction is then averaged over ``f`` x ``f`` pixels, so the
loss is computed on the reference's own grid. A reference finer than the model's resolution is
first averaged to the coarsest whole multiple of its pixel that does not exceed it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling

from canopy.errors import TrainingError
from canopy.grid import Block, OutputGrid
from canopy.imagery import GeoTiffSource
from canopy.models.height_model import HeightModel
from canopy.tiling import ChipLayout
from canopy.tiling.block_input import read_block


@dataclass
class Sample:
    """One chip: the head's inputs (per layer: patch features (C, h, w), class token (C,)), the
    reference heights under it (S/f, S/f; NaN where unknown) and the pooling factor ``f``."""

    features: list[tuple[torch.Tensor, torch.Tensor]]
    target: torch.Tensor
    factor: int
    image: str


def _reference_grid(ref: rasterio.DatasetReader, model_res: float) -> tuple[OutputGrid, np.ndarray]:
    """The reference's grid (coarsened when finer than ``model_res``) and its heights, NaN for nodata."""
    if ref.crs is None or ref.crs.is_geographic:
        raise TrainingError(
            f"Reference {ref.name} must be in a projected CRS with metre pixels; warp it first (e.g. gdalwarp -t_srs EPSG:326xx)."
        )
    res = abs(ref.res[0])
    if abs(abs(ref.res[1]) - res) > 1e-9 * res or ref.transform.b or ref.transform.d:
        raise TrainingError(f"Reference {ref.name} must have square, north-up pixels; warp it first (gdalwarp -tr).")
    coarsen = max(1, math.floor(model_res / res + 1e-9))
    height, width = ref.height // coarsen, ref.width // coarsen
    if height == 0 or width == 0:
        raise TrainingError(f"Reference {ref.name} is smaller than one model pixel of {model_res} m.")
    data = ref.read(1, out_shape=(height, width), resampling=Resampling.average, masked=True)
    heights = data.astype(np.float32).filled(np.nan)
    grid = OutputGrid(ref.crs, res * coarsen, ref.transform.c, ref.transform.f, width, height)
    return grid, heights


def build_samples(
    model: HeightModel,
    imagery: str | os.PathLike,
    reference: str | os.PathLike,
    chip_size: int,
    device: torch.device,
) -> list[Sample]:
    """Backbone features and targets for every chip over one reference raster.

    Parameters
    ----------
    model
        The height model whose (frozen) backbone makes the features.
    imagery
        The RGB GeoTIFF over the reference.
    reference
        Canopy height in metres (nodata ignored), in any CRS and resolution.
    chip_size
        Chip side in model pixels, a multiple of the patch size.
    device
        Where the backbone runs.

    Returns
    -------
    list of Sample
        Chips without any valid reference pixel are left out.

    Raises
    ------
    TrainingError
        If the reference has non-square pixels or no valid height under the imagery.
    """
    spec = model.spec
    with rasterio.open(reference) as ref:
        ref_grid, heights = _reference_grid(ref, spec.ground_resolution)
    factor = max(1, round(ref_grid.res / spec.ground_resolution))
    grid = OutputGrid(ref_grid.crs, ref_grid.res / factor, ref_grid.left, ref_grid.top, ref_grid.width * factor, ref_grid.height * factor)
    size = chip_size
    while size % factor:
        size += model.patch_size
    layout = ChipLayout(size, 0, model.patch_size)
    fill = np.asarray(spec.normalization.mean, np.float32)
    samples = []
    with GeoTiffSource(imagery) as source:
        for row in layout.starts(grid.height):
            for col in layout.starts(grid.width):
                block = Block(row, col, min(size, grid.height - row), min(size, grid.width - col))
                inp = read_block([source], grid, block, layout, fill)
                target = np.full((size // factor, size // factor), np.nan, np.float32)
                r0, c0 = row // factor, col // factor
                part = heights[r0 : r0 + size // factor, c0 : c0 + size // factor]
                target[: part.shape[0], : part.shape[1]] = part
                valid = inp.valid.reshape(size // factor, factor, size // factor, factor).all(axis=(1, 3))
                target[~valid] = np.nan
                if not np.isfinite(target).any():
                    continue
                with torch.no_grad():  # not inference_mode: the head trains on these tensors
                    x = torch.from_numpy(inp.rgb[None]).to(device)
                    layers = [(p[0].cpu(), c[0].cpu()) for p, c in model.features(x)]
                samples.append(Sample(layers, torch.from_numpy(target), factor, Path(imagery).name))
    if not samples:
        raise TrainingError(f"Reference {reference} has no valid height under imagery {imagery}; check that they overlap.")
    return samples
