"""A canopy height map read window by window for the analyses that work on pixels (trees, forest), checked once.

A map is a GeoTIFF path, or a DataArray (from :func:`canopy.open` or :func:`canopy.predict`). Any
window can be asked for, also one reaching past the map's edges (the halo of an edge block): what
lies outside is NaN, as is no-data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from canopy.errors import HeightMapError, ImageryReadError


@dataclass(frozen=True)
class HeightRaster:
    """A checked canopy height map: where it lies and how to read a window of it.

    Use :func:`open_height_raster` to make one. ``path`` is set when the map is a file (workers of a
    Dask cluster then read it themselves); otherwise ``data`` holds the heights.
    """

    name: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    path: str | None = None
    data: np.ndarray | None = None

    @property
    def res(self) -> float:
        """The pixel size in metres."""
        return abs(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the map's CRS."""
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (self.width, self.height)
        return left, bottom, right, top

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Heights (float32, NaN for no-data and outside the map) of the window whose top-left pixel is (row, col)."""
        if self.data is not None:
            return read_padded(lambda w: np.asarray(self.data[w.toslices()]), row, col, height, width, (self.height, self.width))
        with rasterio.open(self.path) as src:
            return read_padded(lambda w: src.read(1, window=w, masked=True), row, col, height, width, (self.height, self.width))


def read_padded(read: Callable[[Window], np.ndarray], row: int, col: int, height: int, width: int,
                shape: tuple[int, int]) -> np.ndarray:
    """A window of a raster of ``shape`` that may reach past its edges: float32, NaN outside it and where ``read``
    (which reads a window inside it, masked or with NaN) has no data."""
    out = np.full((height, width), np.nan, np.float32)
    top, left = max(row, 0), max(col, 0)
    bottom, right = min(row + height, shape[0]), min(col + width, shape[1])
    if top < bottom and left < right:
        values = np.ma.asarray(read(Window(left, top, right - left, bottom - top)))
        out[top - row : bottom - row, left - col : right - col] = values.astype(np.float32).filled(np.nan)
    return out


MAX_RES_M = 2.0
"""Coarsest pixel size (m) the per-tree analyses accept: a crown must span a few pixels."""


def open_height_raster(chm: str | os.PathLike | xr.DataArray, max_res: float | None = MAX_RES_M) -> HeightRaster:
    """Check a canopy height map once and describe it for window reads.

    Parameters
    ----------
    chm
        A GeoTIFF path, or a DataArray with a CRS (``.rio``).
    max_res
        The coarsest pixel size in metres accepted; None for any.

    Returns
    -------
    HeightRaster

    Raises
    ------
    HeightMapError
        If the map has no CRS, is in degrees, declares neither a no-data value nor a mask (a file), has pixels that
        are not square and north-up, or is coarser than ``max_res``.
    ImageryReadError
        If the file cannot be read as a raster.
    """
    if isinstance(chm, xr.DataArray):
        import rioxarray  # noqa: F401  (the .rio accessor)

        name = str(chm.encoding.get("source") or chm.name or "the map")
        data = chm.squeeze(drop=True) if chm.ndim == 3 else chm
        raster = HeightRaster(name, data.rio.crs, data.rio.transform(), data.rio.width, data.rio.height,
                              data=np.asarray(data.values, np.float32))
        nodata_declared = True  # a DataArray's missing values are NaN
    else:
        name = str(chm)
        try:
            with rasterio.open(chm) as src:
                raster = HeightRaster(name, src.crs, src.transform, src.width, src.height, path=name)
                nodata_declared = src.nodata is not None or rasterio.enums.MaskFlags.all_valid not in src.mask_flag_enums[0]
        except rasterio.errors.RasterioIOError:
            raise ImageryReadError(f"Map {chm} is not a raster GDAL can read; pass a GeoTIFF canopy height map.") from None
    if raster.crs is None:
        raise HeightMapError(f"Map {name} has no CRS; set one (gdal_edit.py -a_srs EPSG:...) so lengths are in metres.")
    if raster.crs.is_geographic:
        raise HeightMapError(f"Map {name} is in degrees ({raster.crs.to_string()}); reproject it to a projected CRS in metres (e.g. its UTM zone).")
    t = raster.transform
    if t.b != 0 or t.d != 0 or t.e >= 0 or not np.isclose(abs(t.a), abs(t.e), rtol=1e-6):
        raise HeightMapError(f"Map {name} has rotated or non-square pixels; warp it to a north-up grid with square pixels.")
    if not nodata_declared:
        raise HeightMapError(f"Map {name} declares no no-data value, so gaps would count as ground; set one (gdal_edit.py -a_nodata).")
    if max_res is not None and raster.res > max_res:
        raise HeightMapError(f"Map {name} has {raster.res:g} m pixels, too coarse for tree crowns; use a map of {max_res:g} m or finer.")
    return raster

