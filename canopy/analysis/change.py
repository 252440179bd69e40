"""Height change between two canopy height maps: the difference as a COG, loss and gain as polygons, forest lost.

Both maps are read on one grid (the first map's, or a resolution and CRS given) block by block
(:class:`~canopy.analysis.map_on_grid.MapOnGrid`). Per block, the difference ``after - before``
(NaN where either has no data) goes to the COG writer, and the pixels that fell (rose) by more
than the threshold, after an optional opening against speckle, are labelled; their parts are
joined across blocks (:mod:`canopy.analysis.components`) with their sums of before, after and
change. A second pass keeps the parts of at least the minimum area and turns them into polygons,
and with ``forest`` counts the loss inside the first date's forest.
"""

from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import xarray as xr
from rasterio.features import shapes
from rasterio.windows import Window

from canopy.analysis.components import BlockParts, label
from canopy.analysis.forest import ForestMap, forest
from canopy.analysis.forest_rule import ForestDefinition
from canopy.analysis.height_raster import open_height_raster
from canopy.analysis.map_on_grid import MapOnGrid
from canopy.analysis.morphology import opened
from canopy.errors import CanopyWarning, HeightMapError, OutputPathError, warn
from canopy.grid import OutputGrid, intersects, iter_blocks, parse_crs, snap_grid, to_crs
from canopy.io.atomic import atomic_path
from canopy.io.cog import StreamingCog
from canopy.io.gdal_env import run_env
from canopy.io.output_lock import output_lock, scratch_folder
from canopy.io.qml import change_qml, style_range
from canopy.io.vector_layers import write_layers
from canopy.io.vector_styles import fill_qml

Z_95 = 1.96
"""A change beyond ``Z_95 * sqrt(2) * RMSE`` is unlikely (5 %) to be the noise of two maps each off by RMSE."""
LOSS_FILL, GAIN_FILL = "200,80,30,150", "20,140,120,150"


class UnknownDateWarning(CanopyWarning):
    """A map whose imagery date is not in its tags: the change cannot say when it happened."""


@dataclass(frozen=True)
class ChangeResult:
    """What changed between two maps.

    ``difference`` is ``after - before`` in metres on the common grid (NaN where either has no
    data); ``loss`` and ``gain`` are polygons (their holes smaller than the minimum area filled) with
    ``area_ha`` and the mean ``before_mean``, ``after_mean`` and ``change_mean`` (m) of their changed pixels; ``before_date`` and ``after_date`` are the imagery dates the maps' tags
    give (None when unknown); ``threshold`` is the change (m) a pixel had to exceed; with a forest
    definition, ``forest`` is the first date's forest and ``forest_lost_ha`` the area of loss polygons inside it.
    """

    difference: xr.DataArray
    loss: gpd.GeoDataFrame
    gain: gpd.GeoDataFrame
    before_date: str | None
    after_date: str | None
    threshold: float
    forest: ForestMap | None = None
    forest_lost_ha: float | None = None


def noise_threshold(rmse: float) -> float:
    """The change threshold (m) for maps whose error against lidar is ``rmse``: ``1.96 * sqrt(2) * rmse``.

    The difference of two maps with independent errors of standard deviation ``rmse`` has a
    standard deviation of ``sqrt(2) * rmse``; beyond 1.96 of those, a pixel's change is noise with
    a chance of 5 % or less.
    """
    return Z_95 * math.sqrt(2.0) * rmse


def change(
    before: str | os.PathLike,
    after: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    threshold: float | None = 5.0,
    error_rmse: float | None = None,
    min_area_ha: float = 0.05,
    opening: float = 0.0,
    res: float | None = None,
    crs: str | None = None,
    forest_definition: ForestDefinition | None = None,
    block_size: int = 2048,
) -> ChangeResult:
    """Compare two canopy height maps (two dates; any models, grids or CRSs) and find where height fell or rose.

    Parameters
    ----------
    before, after
        The two maps (GeoTIFFs).
    out
        The difference COG (``.tif``, with a diverging ``.qml`` style beside it); loss and gain
        polygons go to ``<name>.gpkg`` (layers ``loss`` and ``gain``, styled) and, with a forest
        definition, the first date's forest to ``<name>_forest.gpkg`` and ``.tif``. None keeps it all in memory.
    threshold
        A pixel changed when its height fell (rose) by more than this (m).
    error_rmse
        Instead of ``threshold``: the maps' RMSE against lidar (``canopy evaluate``), from which
        the threshold is derived (:func:`noise_threshold`).
    min_area_ha
        Loss or gain parts smaller than this are dropped (speckle).
    opening
        If positive, the diameter (m) of a disc the changed pixels are opened with first, which
        removes lines and specks narrower than it.
    res, crs
        The grid: None for the first map's; otherwise a pixel size (m) and CRS, over the maps' overlap.
    forest_definition
        Also map the first date's forest under this definition (``ForestDefinition()`` for FAO's)
        and measure the loss inside it.
    block_size
        Block side in pixels.

    Returns
    -------
    ChangeResult

    Raises
    ------
    HeightMapError
        If a map has no CRS or is in degrees, the maps do not overlap, or a threshold is negative or not a number.
    OutputPathError
        If ``out`` does not end in ``.tif`` or its folder does not exist.

    .. versionadded:: 0.3
    """
    threshold = _threshold(threshold, error_rmse)
    for name, value in (("min_area_ha", min_area_ha), ("opening", opening)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise HeightMapError(f"{name} must be a number of at least 0, got {value!r}.")
    first, second = (open_height_raster(m, max_res=None) for m in (before, after))
    grid = _common_grid(first, second, res, crs)
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".tif" or not out.parent.is_dir():
            raise OutputPathError(f"Output {out} must be a .tif in an existing folder (the polygons go beside it as .gpkg).")
    dates = (_imagery_date(before), _imagery_date(after))
    for path, date in zip((before, after), dates):
        if date is None:
            warn(f"Map {path} does not say when its imagery was taken (no canopy_imagery_date or TIFFTAG_DATETIME "
                          "tag); the change is reported without dates.", UnknownDateWarning)
    with ExitStack() as stack:
        if out is not None:
            stack.enter_context(output_lock(out, [out.with_suffix(".gpkg")]))
        scratch = Path(stack.enter_context(scratch_folder(out)))
        stack.enter_context(run_env())
        run = _ChangeRun(grid, MapOnGrid(str(before), grid), MapOnGrid(str(after), grid), threshold, min_area_ha, opening,
                         block_size, scratch, forest_definition is not None)
        try:
            run.measure()
            forest_map = None
            if forest_definition is not None:
                forest_map = forest(run.before_file, None if out is None else out.with_name(f"{out.stem}_forest.gpkg"),
                                    definition=forest_definition, block_size=block_size)
            loss, gain = run.polygons()
            target = scratch / "change.tif" if out is None else out
            tags = {"canopy_change_before": Path(before).name, "canopy_change_after": Path(after).name,
                    "canopy_change_before_date": dates[0] or "unknown", "canopy_change_after_date": dates[1] or "unknown",
                    "canopy_change_threshold_m": f"{threshold:g}", "units": "m"}
            with atomic_path(target) as tmp:
                run.cog.finish(tmp, tags)
            vmax = style_range(run.largest_change())
            with atomic_path(target.with_suffix(".qml")) as tmp:
                tmp.write_text(change_qml(vmax))
            if out is not None:
                write_layers(out.with_suffix(".gpkg"), [{"loss": loss, "gain": gain}], {"loss": "Polygon", "gain": "Polygon"},
                             {"loss": fill_qml(LOSS_FILL), "gain": fill_qml(GAIN_FILL)}, "written by canopy change")
            from canopy.analysis.maps import open_map

            difference = open_map(target)
            if out is None:
                difference = difference.load()
        finally:
            run.close()
    lost = None
    if forest_map is not None:
        lost = float(shapely.area(shapely.intersection(shapely.union_all(loss.geometry.values),
                                                       shapely.union_all(forest_map.polygons.geometry.values)))) / 1e4
    return ChangeResult(difference, loss, gain, dates[0], dates[1], threshold, forest_map, lost)


def _threshold(threshold: float | None, error_rmse: float | None) -> float:
    """The change threshold in metres, from itself or from an RMSE; one sentence when neither is a usable number."""
    value, name = (threshold, "threshold") if error_rmse is None else (error_rmse, "error_rmse")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise HeightMapError(f"The change {name} must be a number of metres of at least 0, got {value!r}.")
    return float(value) if error_rmse is None else noise_threshold(float(value))


def _common_grid(first, second, res: float | None, crs: str | None) -> OutputGrid:
    """The first map's grid, or a grid of ``res`` in ``crs`` over the maps' overlap; refused when they do not overlap."""
    target_crs = first.crs if crs is None else parse_crs(crs, "--crs")
    boxes = [to_crs(raster.bounds, raster.crs, target_crs) for raster in (first, second)]
    if not intersects(*boxes):
        raise HeightMapError(f"Maps {first.name} and {second.name} do not overlap; compare two maps of the same place.")
    if res is None and crs is None:
        left, _, _, top = first.bounds
        return OutputGrid(first.crs, first.res, left, top, first.width, first.height)
    overlap = (max(boxes[0][0], boxes[1][0]), max(boxes[0][1], boxes[1][1]), min(boxes[0][2], boxes[1][2]), min(boxes[0][3], boxes[1][3]))
    return snap_grid(overlap, target_crs, res if res is not None else first.res)


def _imagery_date(path) -> str | None:
    """The imagery date a map's tags give: canopy's ``canopy_imagery_date``, or the TIFF's ``TIFFTAG_DATETIME``."""
    with rasterio.open(path) as src:
        tags = src.tags()
    return tags.get("canopy_imagery_date") or tags.get("TIFFTAG_DATETIME") or None


class _ChangeRun:
    """The two passes of :func:`change` over one grid's blocks, and the scratch files between them."""

    def __init__(self, grid: OutputGrid, before: MapOnGrid, after: MapOnGrid, threshold: float, min_area_ha: float,
                 opening: float, block_size: int, scratch: Path, keep_before: bool) -> None:
        self.grid, self.before, self.after = grid, before, after
        self.threshold, self.scratch, self.block_size = threshold, scratch, block_size
        self.min_pixels = min_area_ha * 1e4 / grid.res**2
        self.radius = opening / 2 / grid.res
        self.halo = 2 * int(math.ceil(self.radius)) + 1 if opening > 0 else 0
        self.blocks = iter_blocks(grid.height, grid.width, block_size)
        self.parts = {"loss": BlockParts(), "gain": BlockParts()}
        self.cog = StreamingCog(grid, self.blocks, block_size, self._difference, scratch, description="height change (m)")
        self._histogram = np.zeros(301, np.int64)  # |change| in 0.5 m bins up to 150 m, for the style's range
        self.before_file = scratch / "before.tif" if keep_before else None

    def _difference(self, block) -> np.ndarray:
        """A block's stored difference (for the COG writer)."""
        return np.load(self.scratch / f"d_{block.key}.npy", mmap_mode="r")

    def _key(self, block) -> tuple[int, int]:
        """A block's (row, column) in the grid of blocks."""
        return block.row // self.block_size, block.col // self.block_size

    def measure(self) -> None:
        """Pass 1: per block, the difference (stored and streamed to the COG) and the changed parts with their sums."""
        profile = dict(driver="GTiff", width=self.grid.width, height=self.grid.height, count=1, dtype="float32",
                       nodata=float("nan"), crs=self.grid.crs, transform=self.grid.transform, tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate")
        keep = rasterio.open(self.before_file, "w", **profile) if self.before_file is not None else None
        try:
            for block in self.blocks:
                h = self.halo
                b = self.before.read(block.row - h, block.col - h, block.height + 2 * h, block.width + 2 * h)
                a = self.after.read(block.row - h, block.col - h, block.height + 2 * h, block.width + 2 * h)
                d = a - b
                inner = (slice(h, h + block.height), slice(h, h + block.width))
                np.save(self.scratch / f"d_{block.key}.npy", d[inner])
                finite = np.abs(d[inner][np.isfinite(d[inner])])
                self._histogram += np.bincount(np.minimum(finite * 2, 300).astype(np.int64), minlength=301)
                if keep is not None:
                    keep.write(b[inner][None], window=Window(block.col, block.row, block.width, block.height))
                self.cog.block_done(block)
                values = np.stack([b[inner], a[inner], d[inner]])
                for kind, changed in (("loss", d < -self.threshold), ("gain", d > self.threshold)):
                    if self.radius > 0:
                        changed = opened(changed, self.radius)
                    labels, count = label(changed[inner])
                    np.save(self.scratch / f"{kind}_{block.key}.npy", labels)
                    self.parts[kind].add(self._key(block), labels, count, values=np.nan_to_num(values))
        finally:
            if keep is not None:
                keep.close()
        for parts in self.parts.values():
            parts.join()

    def polygons(self) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
        """Pass 2: the loss and gain parts of at least the minimum area as polygons."""
        tables = []
        for kind, parts in self.parts.items():
            pieces: list[tuple[int, shapely.Geometry]] = []
            for block in self.blocks:
                labels = np.load(self.scratch / f"{kind}_{block.key}.npy")
                count = int(labels.max())
                size, _ = parts.whole(self._key(block), count)
                kept = np.where(size[labels] >= self.min_pixels, labels, 0)
                ids = parts.ids(self._key(block), count)
                transform = self.grid.transform * self.grid.transform.translation(block.col, block.row)
                pieces += [(int(ids[int(v)]), shapely.geometry.shape(g))
                           for g, v in shapes(kept.astype(np.int32), mask=kept > 0, transform=transform)]
            tables.append(self._table(pieces, parts))
        return tables[0], tables[1]

    def _table(self, pieces: list[tuple[int, shapely.Geometry]], parts: BlockParts) -> gpd.GeoDataFrame:
        """Polygons dissolved by part, with their area and mean before, after and change."""
        columns = ("area_ha", "before_mean", "after_mean", "change_mean")
        if not pieces:
            return gpd.GeoDataFrame({c: np.zeros(0) for c in columns}, geometry=gpd.GeoSeries([], crs=self.grid.crs), crs=self.grid.crs)
        frame = gpd.GeoDataFrame({"part": [p for p, _ in pieces]}, geometry=[g for _, g in pieces], crs=self.grid.crs)
        merged = frame.dissolve(by="part").reset_index()
        sums = parts.sums()[merged.part.to_numpy()]
        pixels = parts.sizes()[merged.part.to_numpy()]
        geometry = [_without_small_holes(g, self.min_pixels * self.grid.res**2) for g in merged.geometry.values]
        table = gpd.GeoDataFrame({"area_ha": shapely.area(geometry) / 1e4, "before_mean": sums[:, 0] / pixels,
                                  "after_mean": sums[:, 1] / pixels, "change_mean": sums[:, 2] / pixels},
                                 geometry=geometry, crs=self.grid.crs)
        return table.sort_values("area_ha", ascending=False, ignore_index=True)

    def largest_change(self) -> float:
        """The 98th percentile of |change| (m), for the style's range."""
        total = self._histogram.sum()
        return float(np.searchsorted(np.cumsum(self._histogram), 0.98 * total) / 2) if total else 0.0

    def close(self) -> None:
        """Close the maps and the COG writer."""
        self.cog.close()
        self.before.close()
        self.after.close()


def _without_small_holes(shape: shapely.Geometry, min_area: float) -> shapely.Geometry:
    """A polygon (or each of a multipolygon's) without its holes smaller than ``min_area`` m²: the gaps between
    the crowns of a harvested stand lost no height, but belong to the harvest."""
    polygons = shapely.get_parts(shape)
    kept = [shapely.Polygon(p.exterior, [r for r in p.interiors if shapely.Polygon(r).area >= min_area]) for p in polygons]
    return kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
