"""A height map read on another grid, window by window: directly when it is already on it, warped otherwise.

Warping averages when the grid is coarser than the map (every source pixel counts, as a coarser
pixel should) and interpolates bilinearly when it is finer. GDAL's exact transformer is used
(no approximation error threshold), so a pixel's value does not depend on the window it is read in.
"""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from canopy.analysis.height_raster import read_padded
from canopy.grid import OutputGrid


class MapOnGrid:
    """Reads a single-band height map (float32 metres, NaN for no data) on ``grid``.

    Parameters
    ----------
    path
        The map's file.
    grid
        The grid to read it on.
    """

    def __init__(self, path: str, grid: OutputGrid) -> None:
        self.grid = grid
        self._src = rasterio.open(path)
        t = self._src.transform
        offset = ~t * (grid.left, grid.top)
        same = (self._src.crs == grid.crs and np.isclose(abs(t.a), grid.res) and np.isclose(abs(t.e), grid.res)
                and np.allclose(offset, np.round(offset), atol=1e-6))
        self._offset = (int(round(offset[1])), int(round(offset[0]))) if same else None
        self._vrt = None
        if not same:
            resampling = Resampling.average if grid.res > abs(t.a) * 1.001 else Resampling.bilinear
            self._vrt = WarpedVRT(self._src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                                  resampling=resampling, tolerance=1e-6, src_nodata=self._src.nodata, nodata=np.nan,
                                  dtype="float32")

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Heights of the grid window at (row, col), NaN outside the map, outside the grid and for no data."""
        return read_padded(self._read_inside, row, col, height, width, self.grid.shape)

    def _read_inside(self, window: Window) -> np.ndarray:
        """A window inside the grid, masked where the map has no data (or does not reach)."""
        if self._vrt is not None:
            return self._vrt.read(1, window=window, masked=True)
        moved = Window(window.col_off + self._offset[1], window.row_off + self._offset[0], window.width, window.height)
        return self._src.read(1, window=moved, boundless=True, masked=True,
                              fill_value=self._src.nodata if self._src.nodata is not None else np.nan)

    def close(self) -> None:
        """Close the map."""
        if self._vrt is not None:
            self._vrt.close()
        self._src.close()
