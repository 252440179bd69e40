"""A calibration applied to an existing map: its heights on the block engine (streamed into a COG, resumable, local or
on Dask), and its prediction interval as xarray."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr

from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.analysis.maps import open_map, with_companions
from canopy.blockwise.layout import BlockLayout, block_window
from canopy.blockwise.run import block_run
from canopy.calibration import Calibration, map_identity, missing_uncertainty
from canopy.choices import DEFAULT_BLOCK_SIZE
from canopy.cluster import ClusterSpec
from canopy.errors import OutputPathError
from canopy.grid import Block
from canopy.io.cog import height_percentile
from canopy.io.companions import KINDS, UNCERTAINTY
from canopy.io.qml import style_range, write_qml


_BAND_ATTRIBUTES = ("scale_factor", "add_offset", "long_name", "units")
"""What the reader (rioxarray) puts in a map's attributes from its band, not its tags: the COG writer sets the band's own."""


def apply_calibration(chm: str | os.PathLike | xr.DataArray, calibration: Calibration | str | os.PathLike,
                      out: str | os.PathLike | None = None, *, block_size: int = DEFAULT_BLOCK_SIZE, client=None,
                      cluster: ClusterSpec | None = None, resume: bool = False) -> xr.DataArray:
    """Apply a calibration to an existing map made by the model it was fitted for.

    Parameters
    ----------
    chm
        The map: a GeoTIFF, or a DataArray from :func:`canopy.open` or :func:`canopy.predict`.
    calibration
        A :class:`~canopy.calibration.Calibration` or its JSON file.
    out
        Also write the calibrated map here as a COG (with its QGIS style), with the map's tags and
        ``canopy_calibration``, block by block; the result is then read from it lazily.
    block_size
        Block side in pixels, when writing ``out``.
    client, cluster
        A Dask client, or a cluster to start or connect to, to compute blocks on; neither for threads here.
    resume
        Reuse the blocks a killed run with the same map and calibration kept beside ``out``.

    Returns
    -------
    xarray.DataArray
        The calibrated heights, with the map's attributes and ``canopy_calibration``.

    Raises
    ------
    CalibrationError
        If the calibration was fitted for another model or weights, or cannot be read.
    HeightMapError
        If the map is not a single-band map with a CRS in metres and a no-data value.
    OutputPathError
        If ``out`` does not end in ``.tif`` or its folder does not exist.

    .. versionadded:: 0.3
    """
    if not isinstance(calibration, Calibration):
        calibration = Calibration.read(calibration)
    raster = open_height_raster(chm, max_res=None)
    data = chm if isinstance(chm, xr.DataArray) else open_map(chm)
    calibration.check_for(map_identity(data.attrs), f"map {chm if not isinstance(chm, xr.DataArray) else data.name}")
    attrs = {**data.attrs, "canopy_calibration": calibration.digest}
    if out is None:
        result = data.copy(data=calibration.apply(data.values))
        result.attrs = attrs
        return result
    out = Path(out)
    if out.suffix.lower() != ".tif" or not out.parent.is_dir():
        raise OutputPathError(f"Output {out} must be a .tif in an existing folder.")
    layout = BlockLayout(raster.height, raster.width, raster.transform, block_size)
    fingerprint = {"analysis": "apply_calibration", "map": raster.fingerprint, "calibration": calibration.digest,
                   "block_size": block_size}
    tags = {k: str(v) for k, v in attrs.items() if not k.startswith("_") and k not in _BAND_ATTRIBUTES}
    with block_run(out, fingerprint, resume=resume, client=client, cluster=cluster) as run:
        counts = run.raster_stage("calibrated", partial(_calibrated, run.shareable(raster), calibration), layout, raster.grid,
                                  "heights", out, tags)
        write_qml(out.with_suffix(".qml"), style_range(height_percentile(counts, 98)))
    return open_map(out)


def _calibrated(raster: HeightRaster, calibration: Calibration, block: Block) -> dict[str, np.ndarray]:
    """A block's calibrated heights."""
    return {"heights": calibration.apply(raster.read_window(block_window(block)))}


def prediction_interval(chm: str | os.PathLike | xr.DataArray, calibration: Calibration | str | os.PathLike,
                        level: float | None = 0.9) -> xr.Dataset:
    """The prediction interval a calibration holds, around an existing map's calibrated heights.

    Parameters
    ----------
    chm
        The map: a GeoTIFF (its ``<name>.uncertainty.tif`` is read beside it), or a DataArray from
        :func:`canopy.open` or :func:`canopy.predict` (its ``uncertainty`` coordinate). Raw heights
        are calibrated first; a map the calibration was already applied to is taken as it is.
        Dask-backed maps (``canopy.open(path, chunks=...)``) give a lazy result.
    calibration
        A :class:`~canopy.calibration.Calibration` with an interval, or its JSON file.
    level
        The share of reference heights the interval should hold (0.9: 90 %); None for the level it was fitted at.

    Returns
    -------
    xarray.Dataset
        ``lower`` and ``upper`` (y, x) in metres, float32, on the map's grid, NaN where it has no
        height; attributes ``level`` and ``canopy_calibration``.

    Raises
    ------
    CalibrationError
        If the calibration has no interval, was fitted for another model or weights, or on maps with an
        uncertainty this map lacks, or the level is outside what it holds.
    HeightMapError
        If the map is not a single-band map with a CRS.

    .. versionadded:: 0.3.0
    """
    if not isinstance(calibration, Calibration):
        calibration = Calibration.read(calibration)
    interval = calibration.require_interval()
    level = interval.level if level is None else float(level)
    interval.check_level(level)
    data = chm if isinstance(chm, xr.DataArray) else with_companions(open_map(chm), chm)
    name = f"map {data.name if isinstance(chm, xr.DataArray) else chm}"
    calibration.check_for(map_identity(data.attrs), name)
    if interval.scaled and UNCERTAINTY not in data.coords:
        raise missing_uncertainty(name)
    interval.check_uncertainty(data.attrs, name)
    spread = data.coords[UNCERTAINTY].variable if interval.scaled else None
    heights = data.drop_vars([k for k in KINDS if k in data.coords])
    if heights.attrs.get("canopy_calibration") != calibration.digest:
        heights = xr.apply_ufunc(calibration.apply, heights, dask="parallelized", output_dtypes=[np.float32])
    inputs = [heights] + ([xr.DataArray(spread, coords={}, dims=spread.dims)] if spread is not None else [])
    lower, upper = xr.apply_ufunc(lambda h, *u: interval.bounds(h, u[0] if u else None, level), *inputs,
                                  output_core_dims=[[], []], dask="parallelized", output_dtypes=[np.float32, np.float32])
    attrs = {"units": "m", "level": level, "canopy_calibration": calibration.digest}
    return xr.Dataset({"lower": lower.assign_attrs(long_name="lower bound of the prediction interval", units="m"),
                       "upper": upper.assign_attrs(long_name="upper bound of the prediction interval", units="m")}, attrs=attrs)
