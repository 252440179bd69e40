"""A GeoTIFF (or any GDAL raster) read window by window onto the output grid, reprojecting on the fly."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from canopy.errors import AmbiguousNodataWarning, ImageryError, ImageryReadError
from canopy.grid import BBox, OutputGrid, to_crs
from canopy.imagery.source import Patch

# Output pixels this many times coarser than the source are averaged; finer ratios are bilinear.
_AVERAGE_FROM = 1.5


class GeoTiffSource:
    """One georeferenced raster with at least three bands.

    Opening checks what can be checked before any work is done: that the file is a raster, is
    georeferenced, has RGB bands of 8-bit data, and that its last block can be read (a truncated
    file fails here, not half-way through a run).

    Parameters
    ----------
    path
        The raster file.

    Raises
    ------
    ImageryReadError
        If the file is missing, not a raster, or truncated.
    ImageryError
        If it has no CRS or geotransform, fewer than 3 bands, or data that is not 8-bit.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.exists():
            raise ImageryReadError(f"Imagery {self.path} does not exist; check the path.")
        try:
            with warnings.catch_warnings():
                # canopy says so itself, in one sentence, if the file is not georeferenced
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except RasterioIOError:
            raise ImageryReadError(f"Imagery {self.path} is not a raster GDAL can read; pass a GeoTIFF.") from None
        try:
            self._check()
        except BaseException:
            self._ds.close()
            raise
        self.crs: CRS = self._ds.crs
        self.bounds: BBox = tuple(self._ds.bounds)
        self.res: float = float(min(abs(self._ds.res[0]), abs(self._ds.res[1])))
        self.bands = self._rgb_bands()
        self._footprints: dict[str, BBox] = {}
        self._vrt_options = self._nodata_rule()

    def _check(self) -> None:
        """Refuse rasters canopy cannot place on a map or read as RGB."""
        ds = self._ds
        if ds.crs is None:
            raise ImageryError(f"Imagery {self.path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32611).")
        if ds.transform.is_identity or ds.transform.b or ds.transform.d:
            what = "no geotransform" if ds.transform.is_identity else "a rotated geotransform"
            raise ImageryError(f"Imagery {self.path} has {what}; georeference it north-up (e.g. gdalwarp) first.")
        if ds.count < 3:
            raise ImageryError(f"Imagery {self.path} has {ds.count} band(s); canopy needs RGB imagery with at least 3 bands.")
        if ds.dtypes[0] != "uint8":
            raise ImageryError(
                f"Imagery {self.path} is {ds.dtypes[0]}; this version reads 8-bit RGB only, so convert it "
                "(e.g. gdal_translate -ot Byte -scale) first."
            )
        try:
            block_rows, block_cols = ds.block_shapes[0]
            last = Window(0, max(0, ds.height - block_rows), min(ds.width, block_cols), min(ds.height, block_rows))
            ds.read(1, window=last)
        except RasterioError:
            raise ImageryReadError(f"Imagery {self.path} cannot be read to its end; it may be truncated.") from None

    def _rgb_bands(self) -> list[int]:
        """Band indexes of red, green and blue by colour interpretation, else the first three."""
        interp = list(self._ds.colorinterp)
        wanted = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        if all(c in interp for c in wanted):
            return [interp.index(c) + 1 for c in wanted]
        return [1, 2, 3]

    def _nodata_rule(self) -> dict:
        """Decide whether a declared nodata of 255 in 8-bit imagery marks missing data or saturated pixels.

        255 is also the value of a saturated pixel (the NEON orthophotos declare it as nodata and
        hold real white pixels of 255). When the image's top and bottom rows are mostly all-255,
        it is a nodata collar and is masked; otherwise 255 is read as data, and a warning says so.
        """
        ds = self._ds
        if ds.nodata is None or ds.nodata != 255:
            return {}
        rows = [Window(0, 0, ds.width, 1), Window(0, ds.height - 1, ds.width, 1)]
        edges = np.concatenate([ds.read(self.bands, window=w).reshape(3, -1) for w in rows], axis=1)
        if (edges == 255).all(axis=0).mean() >= 0.5:
            return {}
        warnings.warn(
            f"Imagery {self.name} declares nodata=255, which is also a saturated pixel value, and its edges hold "
            "image data: canopy reads pixels of 255 as data, not as nodata.",
            AmbiguousNodataWarning,
            stacklevel=3,
        )
        return {"src_nodata": -1}

    def footprint(self, crs: CRS) -> BBox:
        """Bounds of the raster in ``crs``, computed once per CRS."""
        key = crs.to_wkt()
        if key not in self._footprints:
            self._footprints[key] = to_crs(self.bounds, self.crs, crs)
        return self._footprints[key]

    def _warp(self, grid: OutputGrid, resampling: Resampling) -> np.ndarray:
        """The RGB bands and an alpha band (0 = no data) warped onto ``grid``."""
        alpha = self._ds.count + 1
        with WarpedVRT(
            self._ds,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            add_alpha=True,
            **self._vrt_options,
        ) as vrt:
            try:
                return vrt.read(indexes=[*self.bands, alpha])
            except RasterioError as exc:
                raise ImageryReadError(f"Reading imagery {self.path} failed ({exc}); the file may be damaged.") from None

    def read(self, grid: OutputGrid) -> Patch:
        """RGB in [0, 1] and validity on ``grid``.

        A pixel is valid when its centre falls on a valid source pixel (the nodata value, internal
        masks and alpha bands mark invalid ones). Values are averaged when the grid is much coarser
        than the source, bilinear otherwise; where the bilinear kernel reaches past the data edge,
        the nearest source pixel is used, so no valid pixel is left without a value.
        """
        left, bottom, right, top = grid.bounds
        fl, fb, fr, ft = self.footprint(grid.crs)
        if fl >= right or fr <= left or fb >= top or ft <= bottom:
            return Patch(np.zeros((3, grid.height, grid.width), np.float32), np.zeros(grid.shape, bool))
        source_res = (fr - fl) / self._ds.width
        nearest = self._warp(grid, Resampling.nearest)
        valid = nearest[3] > 0
        rgb = nearest[:3]
        if grid.res / source_res >= _AVERAGE_FROM:
            smooth = self._warp(grid, Resampling.average)
        else:
            smooth = self._warp(grid, Resampling.bilinear)
        rgb = np.where(smooth[3] > 0, smooth[:3], rgb)
        return Patch(rgb.astype(np.float32) / 255.0, valid)

    def close(self) -> None:
        """Close the raster."""
        self._ds.close()

    def __enter__(self) -> GeoTiffSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
