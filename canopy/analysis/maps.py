"""Canopy height maps as xarray: opened lazily, in metres, with attributes that netCDF and Zarr can store."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import xarray as xr


def open_map(path: str | os.PathLike, chunks: None | str | Mapping[str, int] = None) -> xr.DataArray:
    """Open a canopy height map (a COG from ``canopy predict``, or any one-band height raster).

    Parameters
    ----------
    path
        The GeoTIFF.
    chunks
        None reads lazily without Dask (values load on first use); ``"auto"`` or a mapping such as
        ``{"x": 2048, "y": 2048}`` gives a Dask-backed array, for maps larger than memory.

    Returns
    -------
    xarray.DataArray
        ``canopy_height`` (y, x) in metres, NaN where there is no imagery, CRS and transform set
        (``.rio``); attributes are strings and numbers only (the map's tags), so ``to_netcdf``
        and ``to_zarr`` store them.

    Raises
    ------
    CanopyError
        If the file cannot be opened as a raster.
    """
    import rioxarray
    from rasterio.errors import RasterioIOError

    from canopy.errors import ImageryReadError

    try:
        data = rioxarray.open_rasterio(path, masked=True, chunks=chunks)
    except RasterioIOError:
        raise ImageryReadError(f"Map {path} is not a raster GDAL can read; pass a GeoTIFF from `canopy predict`.") from None
    return as_height(data)


def with_companions(data: xr.DataArray, path: str | os.PathLike) -> xr.DataArray:
    """A map with the rasters written beside it (``<name>.uncertainty.tif``, ``.lower.tif``, ``.upper.tif``) as
    coordinates of the same name on (y, x), read as lazily as the map, so ``chm.uncertainty`` is the uncertainty and
    ``chm.sel(...)`` cuts every layer alike; the map alone when there is none.

    .. versionadded:: 0.3.0
    """
    from canopy.io.companions import existing_companions

    layers = {kind: open_map(found).variable for kind, found in existing_companions(path).items()}
    return data.assign_coords(layers) if layers else data


def as_height(data: xr.DataArray) -> xr.DataArray:
    """A one-band raster as ``canopy_height`` in metres, with netCDF-safe attributes."""
    if "band" in data.dims:
        data = data.squeeze("band", drop=True)
    data = data.rename("canopy_height")
    data.attrs = {k: v for k, v in data.attrs.items() if _storable(v)}
    data.attrs.update(units="m", long_name="canopy height")
    return data


def _storable(value) -> bool:
    """Whether netCDF can store an attribute value: text, a number, or a list of numbers."""
    if isinstance(value, (str, int, float, np.number)):
        return True
    return isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(v, (int, float, np.number)) for v in value)
