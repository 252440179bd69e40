"""Cloud-Optimized GeoTIFF output: assemble blocks into a tiled GeoTIFF, then copy it to a COG.

GDAL's COG driver is given a finished tiled GeoTIFF rather than written to directly: written to
directly (GDAL < 3.13) it buffers the whole raster in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from canopy.grid import OutputGrid
from canopy.io.partial import PartialRun
from canopy.tiling.blocks import Block

COG_OPTIONS = {
    "BLOCKSIZE": 512,
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "FLOATING_POINT",
    "LEVEL": 6,
    "OVERVIEWS": "AUTO",
    "OVERVIEW_RESAMPLING": "AVERAGE",
    "BIGTIFF": "IF_SAFER",
}

# Histogram of heights kept while assembling, for the style's range: 0.25 m bins up to 150 m.
_HIST_EDGES = np.arange(0.0, 150.25, 0.25)


def assemble_cog(
    partial: PartialRun,
    grid: OutputGrid,
    blocks: Iterable[Block],
    tags: dict[str, str],
    target: Path,
) -> np.ndarray:
    """Write the blocks of a finished run as one COG at ``target``.

    Parameters
    ----------
    partial
        Where the blocks are.
    grid
        The output grid.
    blocks
        Every block of the grid.
    tags
        Metadata written as GeoTIFF tags.
    target
        The COG to write (normally a temporary path beside the final output).

    Returns
    -------
    numpy.ndarray
        Counts of valid heights in 0.25 m bins from 0 to 150 m (the last bin holds all above),
        for choosing the style's range without reading the output again.
    """
    tiled = partial.dir / "assembled.tif"
    counts = np.zeros(len(_HIST_EDGES) - 1, np.int64)
    with rasterio.open(
        tiled,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="float32",
        nodata=float("nan"),
        crs=grid.crs,
        transform=grid.transform,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        predictor=3,
        zlevel=1,
        BIGTIFF="IF_SAFER",
    ) as dst:
        for block in blocks:
            data = partial.read(block)
            dst.write(data, 1, window=Window(block.col, block.row, block.width, block.height))
            values = data[np.isfinite(data)]
            counts += np.histogram(np.clip(values, 0, _HIST_EDGES[-1] - 1e-3), _HIST_EDGES)[0]
        dst.update_tags(**tags)
        dst.set_band_description(1, "canopy height (m)")
        dst.units = ("m",)
    rasterio.shutil.copy(tiled, target, driver="COG", **COG_OPTIONS)
    tiled.unlink()
    return counts


def height_percentile(counts: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100) of heights from :func:`assemble_cog`'s histogram; 0 when empty."""
    total = counts.sum()
    if total == 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(counts), q / 100.0 * total))
    return float(_HIST_EDGES[min(index + 1, len(_HIST_EDGES) - 1)])
