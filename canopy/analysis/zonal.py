"""Statistics of a canopy height map per polygon (stands, plots, parcels), pixels weighted by their area inside.

The cells under each polygon and the fraction of each cell's area inside it come from
``exactextract``, which reads the map window by window, one polygon at a time, so maps larger than
memory work. The statistics are computed here from those (value, coverage) pairs, so each is
defined in one place: a pixel half inside a polygon counts half.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from shapely.geometry import box

from canopy.analysis.forest_rule import ForestDefinition
from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.analysis.polygons import read_polygons
from canopy.analysis.stand_structure import gap_values, tree_columns
from canopy.analysis.tree_tops import TreeParameters
from canopy.analysis.trees import TreeLayers
from canopy.analysis.trees import trees as trees_in
from canopy.choices import STRUCTURE
from canopy.analysis.allometry import total
from canopy.cluster import ClusterSpec, client_for
from canopy.errors import CanopyWarning, EvaluationError, warn

STATS = ("mean", "median", "p95", "max", "cover")
"""The statistics :func:`zonal_stats` gives by default."""

_TREE_STATS = {"tree_count", "trees_per_ha", "crown_area_mean", "top_height"}
BIOMASS = ("agb", "carbon")
"""Statistics from the trees' biomass (``canopy trees --allometry``): per polygon a total, its 90 % interval and per ha."""
_PERCENTILE = re.compile(r"p([1-9][0-9]?)")


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
    cover_threshold: float | Sequence[float] = 5.0,
    layer: str | None = None,
    *,
    gap_height: float = 2.0,
    gap_min_area: float = 10.0,
    trees: TreeLayers | str | os.PathLike | None = None,
    tree_parameters: TreeParameters | None = None,
    forest_definition: ForestDefinition | None = None,
    client=None,
    cluster: ClusterSpec | None = None,
) -> gpd.GeoDataFrame:
    """Canopy height statistics and stand structure per polygon, each pixel weighted by the fraction of its area inside.

    Parameters
    ----------
    chm
        A canopy height map: a GeoTIFF path, or a DataArray from :func:`canopy.open` or
        :func:`canopy.predict`.
    polygons
        A GeoDataFrame, or a vector file (GeoPackage, shapefile, GeoJSON, GeoParquet), in any CRS;
        they are reprojected to the map's.
    stats
        Which to compute. Heights (m): ``mean``, ``median``, ``max`` and percentiles ``p1`` to
        ``p99`` (columns ``height_<name>``); ``cover``, the share of the valid area taller than
        each ``cover_threshold``. Stand structure: ``gap_fraction``, ``tree_count``,
        ``trees_per_ha``, ``crown_area_mean`` (m²) and ``top_height`` (m), defined in
        :mod:`canopy.analysis.stand_structure`; ``forest_fraction``, the share of the valid area
        that is forest under ``forest_definition`` (:func:`canopy.forest`). ``structure`` stands
        for all six. Biomass, from trees with an allometry: ``agb`` and ``carbon`` give each
        polygon's total (``agb_Mg``, ``carbon_MgC``), its standard deviation and 90 % interval
        (``_sd``, ``_lower``, ``_upper``; the trees' errors shared, :func:`canopy.analysis.allometry.total`)
        and per hectare of valid area (``agb_Mg_ha``, ``carbon_MgC_ha``).
    cover_threshold
        Height in metres above which a pixel is canopy: one value (column ``cover``) or several
        (columns ``cover_<t>m``, e.g. ``cover_2m`` and ``cover_5m``).
    layer
        The layer of a multi-layer vector file.
    gap_height, gap_min_area
        A gap is a connected patch lower than ``gap_height`` metres of at least ``gap_min_area`` m².
    trees
        The map's trees from :func:`canopy.trees` (or the GeoPackage ``canopy trees`` wrote), for
        the tree statistics; None finds them in
        the polygons with ``tree_parameters`` (default :class:`~canopy.analysis.tree_tops.TreeParameters`).
    tree_parameters
        How trees are found when ``trees`` is None.
    forest_definition
        The forest definition for ``forest_fraction``; None for FAO's.
    client, cluster
        A Dask client, or a cluster to start or connect to, for the trees and the forest mask the tree statistics and
        ``forest_fraction`` need (on the block engine, as :func:`canopy.trees` and :func:`canopy.forest`).

    Returns
    -------
    geopandas.GeoDataFrame
        The polygons (in their own CRS) with their columns, plus the statistics asked for,
        ``valid_fraction`` (share of the part inside the map that has heights), ``inside_fraction``
        (share of the polygon inside the map), ``area_m2`` and ``area_ha`` (the polygon's area).
        Polygons entirely outside the map get NaN and one warning says how many.

    Raises
    ------
    EvaluationError
        If a statistic is unknown, the map is not in a projected CRS, or the polygons have no CRS.
    HeightMapError
        For the tree statistics and gaps, as :func:`canopy.trees`.

    .. versionchanged:: 0.3
       Percentiles, several cover thresholds, and the stand-structure statistics.
    """
    from exactextract import exact_extract

    stats = tuple(n for name in stats for n in (STRUCTURE if name == "structure" else (name,)))
    if trees is not None and not isinstance(trees, TreeLayers):
        trees = TreeLayers.read(trees)
    unknown = sorted(n for n in stats if n not in (*STATS, *STRUCTURE, *BIOMASS) and not _PERCENTILE.fullmatch(n))
    if unknown:
        raise EvaluationError(f"Statistics {unknown} are not among {', '.join(STATS)}, p1 to p99, {', '.join(STRUCTURE)}, "
                              f"{', '.join(BIOMASS)}.")
    if set(BIOMASS) & set(stats) and (trees is None or "agb_kg" not in trees.tops.columns):
        raise EvaluationError("Statistics agb and carbon need trees with their biomass: pass --trees, a file from "
                              "`canopy trees --allometry NAME`.")
    thresholds = [float(cover_threshold)] if np.isscalar(cover_threshold) else [float(t) for t in cover_threshold]
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
        rows.append(_stats(values, coverage, stats, thresholds, pixel_area, inside, shape.area if shape is not None else 0.0))
    if "gap_fraction" in stats:
        raster = open_height_raster(chm, max_res=None)
        for row, shape in zip(rows, shapes):
            row["gap_fraction"] = _gap_fraction(raster, shape, gap_height, gap_min_area) if row["inside_fraction"] > 0 else np.nan
    if "forest_fraction" in stats or (_TREE_STATS | set(BIOMASS)) & set(stats):
        with client_for(client, cluster) as connected:
            _engine_statistics(chm, shapes, crs, extent, rows, stats, trees, tree_parameters, forest_definition, connected)
    result = table.copy()
    for name in rows[0] if rows else ():
        result[name] = [row[name] for row in rows]
    outside = int((result["inside_fraction"] == 0).sum()) if rows else 0
    if outside:
        warn(f"{outside} of {len(result)} polygons lie outside the map; their statistics are NaN.",
                      PolygonOutsideWarning)
    return result


def _stats(values: np.ndarray, coverage: np.ndarray, stats: Sequence[str], thresholds: Sequence[float], pixel_area: float,
           inside: float, area: float) -> dict[str, float]:
    """The height statistics of one polygon from its cells' heights and the fraction of each cell inside it."""
    weight = coverage.sum()
    out: dict[str, float] = {}
    for name in stats:
        if name in STRUCTURE or name in BIOMASS:
            continue
        if name == "cover":
            for threshold in thresholds:
                column = "cover" if len(thresholds) == 1 else f"cover_{threshold:g}m"
                out[column] = float(coverage[values > threshold].sum() / weight) if weight > 0 else np.nan
        elif weight == 0:
            out[f"height_{name}"] = np.nan
        elif name == "mean":
            out["height_mean"] = float((values * coverage).sum() / weight)
        elif name == "median":
            out["height_median"] = weighted_quantile(values, coverage, 0.5)
        elif name == "max":
            out["height_max"] = float(values[coverage > 0].max())
        else:
            out[f"height_{name}"] = weighted_quantile(values, coverage, int(name[1:]) / 100)
    out["valid_fraction"] = min(1.0, weight * pixel_area / inside) if inside > 0 else np.nan
    out["inside_fraction"] = inside / area if area > 0 else 0.0
    out["area_m2"] = area
    out["area_ha"] = area / 1e4
    return out


def _gap_fraction(raster: HeightRaster, shape, gap_height: float, gap_min_area: float) -> float:
    """The coverage-weighted share of a polygon's valid pixels that lie in gaps."""
    from exactextract import exact_extract
    from exactextract.raster import XArrayRasterSource

    gaps = gap_values(raster, shape, gap_height, gap_min_area)
    found = exact_extract(XArrayRasterSource(gaps), gpd.GeoDataFrame(geometry=[shape], crs=raster.crs), ["values", "coverage"],
                          output="pandas")
    values, coverage = np.asarray(found["values"][0], np.float64), np.asarray(found["coverage"][0], np.float64)
    valid = np.isfinite(values)
    weight = coverage[valid].sum()
    return float((values[valid] * coverage[valid]).sum() / weight) if weight > 0 else np.nan


def _engine_statistics(chm, shapes: gpd.GeoSeries, crs, extent, rows: list[dict], stats: Sequence[str], trees,
                       tree_parameters: TreeParameters | None, forest_definition: ForestDefinition | None, client) -> None:
    """Add ``forest_fraction`` and the tree statistics to each polygon's row, from the analyses on the block engine
    (on ``client``'s cluster when given)."""
    if "forest_fraction" in stats:
        fractions = _forest_fractions(chm, shapes, forest_definition or ForestDefinition(), client)
        for row, fraction in zip(rows, fractions):
            row["forest_fraction"] = fraction if row["inside_fraction"] > 0 else np.nan
    if (_TREE_STATS | set(BIOMASS)) & set(stats):
        found_trees = trees if trees is not None else trees_in(chm, gpd.GeoDataFrame(geometry=shapes.values, crs=crs),
                                                                   parameters=tree_parameters or TreeParameters(), client=client)
        tops = found_trees.tops.to_crs(crs)
        crowns = found_trees.crowns.set_index("tree_id").loc[tops.tree_id, "crown_area_m2"].to_numpy()
        polygon, tree = shapely.STRtree(tops.geometry.values).query(shapes.values, predicate="contains")
        for k, (row, shape) in enumerate(zip(rows, shapes)):
            mine = tree[polygon == k]
            valid_m2 = row["valid_fraction"] * shape.intersection(extent).area if row["inside_fraction"] > 0 else 0.0
            columns = tree_columns(tops.height.to_numpy()[mine], crowns[mine], valid_m2)
            row.update({name: value for name, value in columns.items() if name in stats})
            for kind, unit in (("agb", "Mg"), ("carbon", "MgC")):
                if kind in stats:
                    row.update(_biomass_columns(f"{kind}_{unit}", tops[f"{kind}_kg"].to_numpy()[mine] / 1000,
                                                tops[f"{kind}_sd_kg"].to_numpy()[mine] / 1000, valid_m2 / 1e4))


def _biomass_columns(name: str, values: np.ndarray, sds: np.ndarray, valid_ha: float) -> dict[str, float]:
    """A polygon's total of its trees' biomass or carbon, with its standard deviation, 90 % interval and per hectare."""
    mean, sd, lower, upper = total(values, sds)
    return {name: mean, f"{name}_sd": sd, f"{name}_lower": lower, f"{name}_upper": upper,
            f"{name}_ha": mean / valid_ha if valid_ha > 0 else np.nan}


def _forest_fractions(chm, shapes: gpd.GeoSeries, definition: ForestDefinition, client=None) -> list[float]:
    """The coverage-weighted forest share of each polygon's valid area, from the whole map's forest mask (streamed to a scratch file)."""
    import tempfile
    from pathlib import Path

    from exactextract import exact_extract

    from canopy.analysis.forest import NODATA, forest

    with tempfile.TemporaryDirectory(prefix="canopy-zonal-") as scratch:
        mask = Path(scratch) / "forest.gpkg"
        forest(chm, mask, definition=definition, client=client)
        found = exact_extract(str(mask.with_suffix(".tif")), gpd.GeoDataFrame(geometry=shapes.values, crs=shapes.crs),
                              ["values", "coverage"], output="pandas")
    fractions = []
    for values, coverage in zip(found["values"], found["coverage"]):
        values, coverage = np.asarray(values, np.float64), np.asarray(coverage, np.float64)
        valid = values != NODATA
        weight = coverage[valid].sum()
        fractions.append(float((coverage[valid] * (values[valid] == 1)).sum() / weight) if weight > 0 else np.nan)
    return fractions


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
