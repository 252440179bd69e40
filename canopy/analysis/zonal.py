"""Statistics of a canopy height map per polygon (stands, plots, parcels), pixels weighted by their area inside.

The cells under each polygon and the fraction of each cell's area inside it come from
``exactextract``, which reads the map window by window, one polygon at a time, so maps larger than
memory work. The statistics are computed here from those (value, coverage) pairs, so each is
defined in one place: a pixel half inside a polygon counts half.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import xarray as xr
from shapely.geometry import box

from canopy.errors import CanopyWarning, EvaluationError

STATS = ("mean", "median", "p95", "max", "cover")
"""Height statistics :func:`zonal_stats` can give, as columns ``height_mean``, ``height_median``, ``height_p95``,
``height_max`` and ``cover``."""


class PolygonOutsideWarning(CanopyWarning):
    """Polygons that do not overlap the map; their statistics are NaN."""


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose cumulative weight, in ascending order of value, reaches ``q`` of the total."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1] * (1 - 1e-12))])


def zonal_stats(
    chm: str | os.PathLike | xr.DataArray,
    polygons: str | os.PathLike | gpd.GeoDataFrame,
    stats: Sequence[str] = STATS,
    cover_threshold: float = 5.0,
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Canopy height statistics per polygon, each pixel weighted by the fraction of its area inside.

    Parameters
    ----------
    chm
        A canopy height map: a GeoTIFF path, or a DataArray from :func:`canopy.open` or
        :func:`canopy.predict`.
    polygons
        A GeoDataFrame, or a vector file (GeoPackage, shapefile, GeoJSON, GeoParquet), in any CRS;
        they are reprojected to the map's.
    stats
        Which of ``mean``, ``median``, ``p95``, ``max`` (of height, m) and ``cover`` (the share of
        the valid area taller than ``cover_threshold``) to compute.
    cover_threshold
        Height in metres above which a pixel is canopy.
    layer
        The layer of a multi-layer vector file.

    Returns
    -------
    geopandas.GeoDataFrame
        The polygons (in their own CRS) with their columns, plus ``height_mean``, ... ``cover``,
        ``valid_fraction`` (share of the part inside the map that has heights), ``inside_fraction``
        (share of the polygon inside the map), ``area_m2`` and ``area_ha`` (the polygon's area).
        Polygons entirely outside the map get NaN and one warning says how many.

    Raises
    ------
    EvaluationError
        If a statistic is unknown, the map is not in a projected CRS, or the polygons have no CRS.
    """
    from exactextract import exact_extract

    unknown = sorted(set(stats) - set(STATS))
    if unknown:
        raise EvaluationError(f"Statistics {unknown} are not among {', '.join(STATS)}.")
    table = read_polygons(polygons, layer)
    with _raster(chm) as (source, crs, bounds, pixel_area):
        if crs is None or not crs.is_projected:
            raise EvaluationError("The map must be in a projected CRS (metres) for areas and cover; reproject it first.")
        shapes = table.geometry.to_crs(crs)
        found = exact_extract(source, gpd.GeoDataFrame(geometry=shapes.values, crs=crs), ["values", "coverage"], output="pandas")
    extent = box(*bounds)
    rows = []
    for shape, values, coverage in zip(shapes, found["values"], found["coverage"]):
        values, coverage = np.asarray(values, np.float64), np.asarray(coverage, np.float64)
        inside = shape.intersection(extent).area if shape is not None else 0.0
        rows.append(_stats(values, coverage, stats, cover_threshold, pixel_area, inside, shape.area if shape is not None else 0.0))
    result = table.copy()
    for name in rows[0] if rows else ():
        result[name] = [row[name] for row in rows]
    outside = int((result["inside_fraction"] == 0).sum()) if rows else 0
    if outside:
        warnings.warn(f"{outside} of {len(result)} polygons lie outside the map; their statistics are NaN.",
                      PolygonOutsideWarning, stacklevel=2)
    return result


def _stats(values: np.ndarray, coverage: np.ndarray, stats: Sequence[str], threshold: float, pixel_area: float,
           inside: float, area: float) -> dict[str, float]:
    """The statistics of one polygon from its cells' heights and the fraction of each cell inside it."""
    weight = coverage.sum()
    out: dict[str, float] = {}
    for name in stats:
        if weight == 0:
            out[_column(name)] = np.nan
        elif name == "mean":
            out["height_mean"] = float((values * coverage).sum() / weight)
        elif name == "median":
            out["height_median"] = weighted_quantile(values, coverage, 0.5)
        elif name == "p95":
            out["height_p95"] = weighted_quantile(values, coverage, 0.95)
        elif name == "max":
            out["height_max"] = float(values[coverage > 0].max())
        else:
            out["cover"] = float(coverage[values > threshold].sum() / weight)
    out["valid_fraction"] = min(1.0, weight * pixel_area / inside) if inside > 0 else np.nan
    out["inside_fraction"] = inside / area if area > 0 else 0.0
    out["area_m2"] = area
    out["area_ha"] = area / 1e4
    return out


def _column(name: str) -> str:
    """The column a statistic goes in."""
    return "cover" if name == "cover" else f"height_{name}"


def read_polygons(polygons: str | os.PathLike | gpd.GeoDataFrame, layer: str | None) -> gpd.GeoDataFrame:
    """Polygons (a vector file or a GeoDataFrame) as a GeoDataFrame with a CRS; :class:`EvaluationError` otherwise."""
    if not isinstance(polygons, gpd.GeoDataFrame):
        try:
            polygons = gpd.read_file(polygons, layer=layer)
        except Exception as exc:  # pyogrio and fiona raise their own kinds for unreadable files
            raise EvaluationError(f"Polygons {polygons} cannot be read ({exc}); pass a GeoPackage, shapefile or GeoJSON.") from None
    if polygons.crs is None:
        raise EvaluationError("The polygons have no CRS; set one (e.g. GeoDataFrame.set_crs) so they can be placed on the map.")
    return polygons


@contextmanager
def _raster(chm):
    """An exactextract source for a map, with its CRS, bounds and pixel area: its file, read by windows, where it has one."""
    import rasterio
    from exactextract.raster import RasterioRasterSource, XArrayRasterSource

    path = chm.encoding.get("source") if isinstance(chm, xr.DataArray) else chm
    if path is None:
        res = chm.rio.resolution()
        yield XArrayRasterSource(chm), chm.rio.crs, tuple(chm.rio.bounds()), abs(res[0] * res[1])
        return
    with rasterio.open(path) as dataset:
        res = dataset.res
        yield RasterioRasterSource(dataset, 1), dataset.crs, tuple(dataset.bounds), abs(res[0] * res[1])
