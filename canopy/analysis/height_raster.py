"""A canopy height map read window by window by the analyses (trees, forest, change, calibration, stand structure),
checked once, on its own grid or on another.

A map is a GeoTIFF path, or a DataArray (from :func:`canopy.open` or :func:`canopy.predict`). Any
window can be asked for, also one reaching past the map's edges (the halo of an edge block): what
lies outside is NaN, as is no-data. On another grid (:meth:`HeightRaster.on`), the map is read
directly when it already lies on it, and warped otherwise: averaged when the grid is coarser (every
source pixel counts, as a coarser pixel should), bilinear when it is finer, with GDAL's exact
transformer, so a pixel's value does not depend on the window it is read in.

Files are opened once per thread and kept open (a few at a time), so a block's reads do not
reopen them; a file rewritten since is opened again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from canopy.errors import HeightMapError, ImageryReadError
from canopy.grid import OutputGrid


@dataclass(frozen=True)
class HeightRaster:
    """A checked canopy height map: where it lies and how to read a window of it.

    Use :func:`open_height_raster` to make one. ``path`` is set when the map is a file (workers of a
    Dask cluster then read it themselves); otherwise ``data`` holds the heights. ``crs``,
    ``transform``, ``width`` and ``height`` are those of the grid it is read on: its own, or the
    one given to :meth:`on`.
    """

    name: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    path: str | None = None
    data: np.ndarray | None = None
    warped: bool = False

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

    @property
    def grid(self) -> OutputGrid:
        """The grid it is read on."""
        return OutputGrid(self.crs, self.res, self.transform.c, self.transform.f, self.width, self.height)

    @property
    def fingerprint(self) -> list:
        """What a resumed run compares: the file's path, size and modification time (a DataArray's digest), and the
        grid it is read on."""
        if self.data is None:
            stat = os.stat(self.path)
            source = [self.path, stat.st_size, stat.st_mtime_ns]
        else:
            source = ["array", hashlib.sha256(np.ascontiguousarray(self.data)).hexdigest()]
        return [*source, list(self.transform)[:6], self.width, self.height, str(self.crs)]

    def shareable(self, folder: Path) -> HeightRaster:
        """The map as a file other processes can read: itself, or a DataArray's heights written to ``folder``."""
        if self.data is None:
            return self
        path = folder / "map.tif"
        with rasterio.open(path, "w", driver="GTiff", width=self.width, height=self.height, count=1, dtype="float32",
                           nodata=float("nan"), crs=self.crs, transform=self.transform, tiled=True, compress="deflate") as dst:
            dst.write(self.data, 1)
        return replace(self, path=str(path), data=None)

    def on(self, grid: OutputGrid) -> HeightRaster:
        """The same map read on ``grid`` (a file's only)."""
        return replace(self, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height, warped=True)

    def read_window(self, window: Window) -> np.ndarray:
        """:meth:`read` of a window (a block's, with its halo)."""
        return self.read(window.row_off, window.col_off, window.height, window.width)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Heights (float32, NaN for no-data and outside the map) of the window whose top-left pixel is (row, col).

        Raises
        ------
        ImageryReadError
            If the file cannot be read there (e.g. it is truncated).
        """
        if self.data is not None:
            return read_padded(lambda w: np.asarray(self.data[w.toslices()]), row, col, height, width, (self.height, self.width))
        reader = _reader(self)
        try:
            return read_padded(reader, row, col, height, width, (self.height, self.width))
        except rasterio.errors.RasterioIOError as exc:
            top, left = max(row, 0), max(col, 0)
            bottom, right = min(row + height, self.height), min(col + width, self.width)
            detail = str(exc.__cause__ or exc).strip().rstrip(".")
            raise ImageryReadError(f"Map {self.name} cannot be read at rows {top}-{bottom}, columns {left}-{right} ({detail}); "
                                   "the file may be cut short: write or copy it again.") from None


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


_OPEN_PER_THREAD = 8
_local = threading.local()


def _reader(raster: HeightRaster) -> Callable[[Window], np.ndarray]:
    """A reader of windows inside the raster's grid, from this thread's open files (opened again if the file changed)."""
    cache: OrderedDict = getattr(_local, "open", None) or OrderedDict()
    _local.open = cache
    stat = os.stat(raster.path)
    key = (raster.path, stat.st_size, stat.st_mtime_ns, raster.grid if raster.warped else None)
    if key not in cache:
        cache[key] = _OpenMap(raster)
        while len(cache) > _OPEN_PER_THREAD:
            cache.popitem(last=False)[1].close()
    cache.move_to_end(key)
    return cache[key].read


class _OpenMap:
    """An open map file, read on its own grid or warped onto another."""

    def __init__(self, raster: HeightRaster) -> None:
        self._src = rasterio.open(raster.path)
        self._vrt = None
        self._offset = (0, 0)
        if raster.warped:
            grid = raster.grid
            t = self._src.transform
            offset = ~t * (grid.left, grid.top)
            same = (self._src.crs == grid.crs and np.isclose(abs(t.a), grid.res) and np.isclose(abs(t.e), grid.res)
                    and np.allclose(offset, np.round(offset), atol=1e-6))
            if same:
                self._offset = (int(round(offset[1])), int(round(offset[0])))
            else:
                resampling = Resampling.average if grid.res > abs(t.a) * 1.001 else Resampling.bilinear
                self._vrt = WarpedVRT(self._src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                                      resampling=resampling, tolerance=1e-6, src_nodata=self._src.nodata, nodata=np.nan,
                                      dtype="float32")

    def read(self, window: Window) -> np.ndarray:
        """A window inside the grid, masked where the map has no data (or does not reach)."""
        if self._vrt is not None:
            return self._vrt.read(1, window=window, masked=True)
        moved = Window(window.col_off + self._offset[1], window.row_off + self._offset[0], window.width, window.height)
        return self._src.read(1, window=moved, boundless=self._offset != (0, 0), masked=True,
                              fill_value=self._src.nodata if self._src.nodata is not None else np.nan)

    def close(self) -> None:
        """Close the file."""
        if self._vrt is not None:
            self._vrt.close()
        self._src.close()


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
        If the map has no CRS, is in degrees, declares neither a no-data value nor a mask (a file), has more
        than one band (imagery, not heights), has pixels that are not square and north-up, or is coarser than
        ``max_res``.
    ImageryReadError
        If the file cannot be read as a raster.
    """
    if isinstance(chm, xr.DataArray):
        import rioxarray  # noqa: F401  (the .rio accessor)

        name = str(chm.encoding.get("source") or chm.name or "the map")
        data = chm.squeeze(drop=True) if chm.ndim == 3 else chm
        if data.ndim != 2:
            raise HeightMapError(f"Map {name} has {chm.shape[0]} bands; pass a single-band canopy height map, not imagery.")
        raster = HeightRaster(name, data.rio.crs, data.rio.transform(), data.rio.width, data.rio.height,
                              data=np.asarray(data.values, np.float32))
        nodata_declared = True  # a DataArray's missing values are NaN
    else:
        name = str(chm)
        try:
            with rasterio.open(chm) as src:
                raster = HeightRaster(name, src.crs, src.transform, src.width, src.height, path=name)
                nodata_declared = src.nodata is not None or rasterio.enums.MaskFlags.all_valid not in src.mask_flag_enums[0]
                bands = src.count
                kinds = sorted(set(src.dtypes))
        except rasterio.errors.RasterioIOError:
            raise ImageryReadError(f"Map {chm} is not a raster GDAL can read; pass a GeoTIFF canopy height map.") from None
        if bands != 1:
            raise HeightMapError(f"Map {name} has {bands} bands of {', '.join(kinds)}: it looks like imagery, not heights; "
                                 "pass a single-band canopy height map (from canopy predict or lidar).")
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
