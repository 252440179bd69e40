"""Height change between two canopy height maps: the difference as a COG, loss and gain as polygons, forest lost.

Both maps are read on one grid (the first map's, or a resolution and CRS given) block by block
(:meth:`~canopy.analysis.height_raster.HeightRaster.on`), on the block engine (:mod:`canopy.blockwise`).
Per block, the difference ``after - before`` (NaN where either has no data) goes to the COG writer,
and the pixels that fell (rose) by more than the threshold, after an optional opening against
speckle, are labelled; their parts are joined across blocks (:mod:`canopy.blockwise.parts`) with
their sums of before, after and change. A second stage keeps the parts of at least the minimum
area and cuts them into polygons, dissolved by part as each part is whole, and with ``forest``
counts the loss pixels inside the first date's forest.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import xarray as xr
from rasterio.features import geometry_mask
from rasterio.windows import from_bounds

from canopy.analysis.coregistration import Shift, estimate_shift
from canopy.analysis.forest import NODATA, ForestMap, forest_of
from canopy.analysis.forest_rule import ForestDefinition
from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.analysis.morphology import opened
from canopy.blockwise.layout import BlockLayout, block_window, inner, read_window
from canopy.blockwise.parts import BlockParts, joined_parts, label, part_summary
from canopy.blockwise.run import BlockRun, block_run
from canopy.blockwise.store import BlockStore, table_arrays
from canopy.blockwise.vectors import (
    Dissolver,
    concat_layers,
    empty_layer,
    polygon_pieces,
)
from canopy.choices import DEFAULT_BLOCK_SIZE
from canopy.cluster import ClusterSpec
from canopy.errors import CanopyWarning, HeightMapError, OutputPathError, warn
from canopy.grid import Block, OutputGrid, intersects, parse_crs, snap_grid, to_crs
from canopy.io.atomic import atomic_path
from canopy.io.cog import Band
from canopy.io.qml import change_qml, style_range
from canopy.io.vector_layers import write_layers
from canopy.io.vector_styles import fill_qml

Z_95 = 1.96
"""A change beyond ``Z_95 * sqrt(2) * RMSE`` is unlikely (5 %) to be the noise of two maps each off by RMSE."""
LOSS_FILL, GAIN_FILL = "200,80,30,150", "20,140,120,150"


log = logging.getLogger(__name__)


class CoregistrationWarning(CanopyWarning):
    """Two maps whose shift against each other could not be estimated."""


class UnknownDateWarning(CanopyWarning):
    """A map whose imagery date is not in its tags: the change cannot say when it happened."""


KINDS = ("loss", "gain")
COLUMNS = {"area_ha": "float64", "before_mean": "float64", "after_mean": "float64", "change_mean": "float64"}
DIFFERENCE_BAND = Band("height change (m)")


@dataclass(frozen=True)
class ChangeResult:
    """What changed between two maps.

    ``difference`` is ``after - before`` in metres on the common grid (NaN where either has no
    data); ``loss`` and ``gain`` are polygons (their holes smaller than the minimum area filled) with
    ``area_ha`` and the mean ``before_mean``, ``after_mean`` and ``change_mean`` (m) of their changed
    pixels, largest first (read from ``<out>.gpkg`` when written); ``counts`` gives each layer's
    polygons and hectares; ``before_date`` and ``after_date`` are the imagery dates the maps' tags
    give (None when unknown); ``threshold`` is the change (m) a pixel had to exceed; with a forest
    definition, ``forest`` is the first date's forest and ``forest_lost_ha`` the area of the loss
    polygons' changed pixels inside it. ``shift`` is the second map's shift against the first
    (:mod:`canopy.analysis.coregistration`; applied when significant), None when not estimated.

    .. versionchanged:: 0.3.0
       ``shift``.
    """

    difference: xr.DataArray
    before_date: str | None
    after_date: str | None
    threshold: float
    counts: dict[str, tuple[int, float]]
    forest: ForestMap | None = None
    forest_lost_ha: float | None = None
    path: Path | None = None
    tables: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)
    shift: Shift | None = None

    @property
    def loss(self) -> gpd.GeoDataFrame:
        """Where height fell."""
        return self._layer("loss")

    @property
    def gain(self) -> gpd.GeoDataFrame:
        """Where height rose."""
        return self._layer("gain")

    def _layer(self, kind: str) -> gpd.GeoDataFrame:
        table = self.tables[kind] if kind in self.tables else gpd.read_file(self.path, layer=kind)
        return table.sort_values("area_ha", ascending=False, ignore_index=True)


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
    block_size: int = DEFAULT_BLOCK_SIZE,
    client=None,
    cluster: ClusterSpec | None = None,
    resume: bool = False,
    coregister: bool = True,
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
    client, cluster
        A Dask client, or a cluster to start or connect to, to compute blocks on; neither for threads here.
    resume
        Reuse the blocks a killed run with the same maps and settings kept beside ``out``.
    coregister
        Estimate how far the second map is shifted against the first, sub-pixel, from the parts that did not
        change (:mod:`canopy.analysis.coregistration`), and undo it before differencing when it is significant;
        recorded in the tags (``canopy_change_shift``). A shift that cannot be estimated is warned about.

    Returns
    -------
    ChangeResult

    Raises
    ------
    HeightMapError
        If a map has no CRS, is in degrees, is not one band, the maps do not overlap, or a threshold is negative
        or not a number.
    ImageryReadError
        If a map cannot be read (the message names the block).
    OutputPathError
        If ``out`` does not end in ``.tif`` or its folder does not exist.
    ResumeError
        If ``resume`` is set and the kept blocks were made with other settings.

    .. versionadded:: 0.3
    .. versionchanged:: 0.3.0
       ``coregister``, on by default.
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
    maps = (first.on(grid), second.on(grid))
    shift = _coregistered(maps) if coregister else None
    if shift is not None and shift.significant:
        moved = OutputGrid(grid.crs, grid.res, grid.left + shift.dx_m, grid.top + shift.dy_m, grid.width, grid.height)
        maps = (maps[0], second.on(moved))
    settings = _Settings(threshold, min_area_ha * 1e4 / grid.res**2, opening / 2 / grid.res)
    layout = BlockLayout(grid.height, grid.width, grid.transform, block_size)
    fingerprint = {"analysis": "change", "before": maps[0].fingerprint, "after": maps[1].fingerprint,
                   "settings": [threshold, min_area_ha, opening], "block_size": block_size,
                   "shift": None if shift is None else [shift.dx_m, shift.dy_m, shift.significant]}
    gpkg = None if out is None else out.with_suffix(".gpkg")
    with block_run(out, fingerprint, written=[] if gpkg is None else [gpkg], resume=resume, client=client, cluster=cluster) as run:
        target = run.scratch / "change.tif"  # lands at out when the polygons are written
        largest = _difference(run, layout, grid, maps, settings, target, {
            "canopy_change_before": Path(before).name, "canopy_change_after": Path(after).name,
            "canopy_change_before_date": dates[0] or "unknown", "canopy_change_after_date": dates[1] or "unknown",
            "canopy_change_threshold_m": f"{threshold:g}",
            "canopy_change_shift": "not estimated" if shift is None else shift.describe(), "units": "m"})
        with atomic_path(target.with_suffix(".qml")) as tmp:
            tmp.write_text(change_qml(style_range(largest)))
        forest_map = forest_mask = None
        if forest_definition is not None:
            forest_out = None if out is None else out.with_name(f"{out.stem}_forest.gpkg")
            forest_map = forest_of(maps[0], forest_out, forest_definition, block_size, client=run.client, resume=resume,
                                   mask_file=run.scratch / "forest.tif")
            forest_mask = str(run.scratch / "forest.tif" if forest_out is None else forest_out.with_suffix(".tif"))
        parts = _kept_parts(run.store, layout, settings)
        run.stage("pieces", partial(_pieces_kernel, str(run.store.dir), layout, min_area_ha * 1e4), layout.blocks)
        tally = _Tally()
        tables = _tables(run, layout, grid, settings, parts, tally, forest_mask)
        if out is None:
            collected = list(tables)
            kept = {kind: concat_layers([t[kind] for t in collected], grid.crs) for kind in KINDS}
        else:
            write_layers(gpkg, tables, {kind: "Polygon" for kind in KINDS},
                         {"loss": fill_qml(LOSS_FILL), "gain": fill_qml(GAIN_FILL)}, "written by canopy change")
            kept = {}
        lost = tally.forest_lost_ha if forest_map is not None else None
        from canopy.analysis.maps import open_map

        if out is None:
            difference = open_map(target).load()
        else:
            for sidecar in (".qml", ".tif"):
                os.replace(target.with_suffix(sidecar), out.with_suffix(sidecar))
            difference = open_map(out)
    return ChangeResult(difference, dates[0], dates[1], threshold, tally.counts, forest_map, lost, gpkg, kept, shift)


def _coregistered(maps: tuple[HeightRaster, HeightRaster]) -> Shift | None:
    """The second map's shift against the first, logged; a warning when it cannot be estimated."""
    shift = estimate_shift(*maps)
    if shift is None:
        warn("The maps' shift against each other could not be estimated (too few windows with data and texture in "
             "both); they are compared as they lie. Pass --no-coregister to skip the attempt.", CoregistrationWarning)
    else:
        log.info("co-registration: %s", shift.describe())
    return shift


@dataclass(frozen=True)
class _Settings:
    """What the kernels need: the threshold (m), the minimum area (px) and the opening's radius (px)."""

    threshold: float
    min_pixels: float
    radius: float

    @property
    def halo(self) -> int:
        """Pixels a block reads beyond its edges for the opening."""
        return 2 * int(math.ceil(self.radius)) + 1 if self.radius > 0 else 0


def _difference(run: BlockRun, layout: BlockLayout, grid: OutputGrid, maps: tuple[HeightRaster, HeightRaster],
                settings: _Settings, target: Path, tags: dict[str, str]) -> float:
    """Stage 1: the difference, written as a COG at ``target`` as its blocks finish; return the 98th percentile of
    |change| (m), for the style's range."""
    kernel = partial(_difference_kernel, *(run.shareable(m) for m in maps), settings)
    run.raster_stage("difference", kernel, layout, grid, "d", target, tags, DIFFERENCE_BAND)
    histogram = sum(run.store.load("difference", b, "histogram") for b in layout.blocks)
    total = histogram.sum()
    return float(np.searchsorted(np.cumsum(histogram), 0.98 * total) / 2) if total else 0.0


def _difference_kernel(before: HeightRaster, after: HeightRaster, settings: _Settings, block: Block) -> dict[str, np.ndarray]:
    """A block's difference, |change| histogram (0.5 m bins to 150 m), and its loss and gain parts with their sums."""
    h = settings.halo
    window = read_window(block, h)
    b, a = before.read_window(window), after.read_window(window)
    d = a - b
    own = inner(block, h)
    finite = np.abs(d[own][np.isfinite(d[own])])
    found = {"d": d[own], "histogram": np.bincount(np.minimum(finite * 2, 300).astype(np.int64), minlength=301)}
    values = np.nan_to_num(np.stack([b[own], a[own], d[own]]))
    for kind, changed in (("loss", d < -settings.threshold), ("gain", d > settings.threshold)):
        if settings.radius > 0:
            changed = opened(changed, settings.radius)
        labels, count = label(changed[own])
        found[f"{kind}.labels"] = labels
        found.update(part_summary(labels, count, values=values, prefix=kind))
    return found


def _pieces_kernel(folder: str, layout: BlockLayout, min_area: float, block: Block) -> dict[str, np.ndarray]:
    """Stage 2: a block's pieces of the loss and gain parts of at least the minimum area, their holes smaller than
    ``min_area`` (m²) filled already (a hole inside a piece is a hole of its part), so that less is held until a part
    is whole."""
    store = BlockStore.attach(folder)
    found: dict[str, np.ndarray] = {}
    transform = layout.transform_of(block_window(block))
    for kind in KINDS:
        labels = store.load("difference", block, f"{kind}.labels")
        keep = np.concatenate([[False], store.load("kept", block, kind)])
        kept = np.where(keep[labels], labels, 0)
        values, pieces = polygon_pieces(kept, transform)
        pieces = [_without_small_holes(p, min_area) for p in pieces]
        found.update(table_arrays(gpd.GeoDataFrame({"label": values}, geometry=list(pieces)), kind))
    return found


def _kept_parts(store: BlockStore, layout: BlockLayout, settings: _Settings) -> dict[str, BlockParts]:
    """The loss and gain parts joined across blocks; which labels of each block belong to parts of the minimum
    area is stored for the pieces' stage."""
    parts = {kind: joined_parts(store, layout, "difference", kind) for kind in KINDS}
    for block in layout.blocks:
        index = layout.index(block)
        store.save("kept", block, {kind: parts[kind].whole(index, parts[kind].count(index))[0][1:] >= settings.min_pixels
                                   for kind in KINDS})
    return parts


@dataclass
class _Tally:
    """What the polygons add up to, counted as they are written: each layer's polygons and hectares, and the hectares
    of forest inside the loss."""

    counts: dict[str, tuple[int, float]] = field(default_factory=lambda: {kind: (0, 0.0) for kind in KINDS})
    forest_lost_ha: float = 0.0


def _tables(run: BlockRun, layout: BlockLayout, grid: OutputGrid, settings: _Settings, parts: dict[str, BlockParts],
            tally: _Tally, forest_mask: str | None) -> Iterator[dict[str, gpd.GeoDataFrame]]:
    """The loss and gain polygons, one pair of tables per block of the parts that end in it (the first pair empty),
    added to ``tally`` as they come (the forest inside the loss with ``forest_mask``)."""
    dissolvers = {kind: Dissolver() for kind in KINDS}
    yield {kind: empty_layer(COLUMNS, grid.crs) for kind in KINDS}
    for block in layout.blocks:
        index = layout.index(block)
        tables = {}
        for kind in KINDS:
            pieces = run.store.load_table("pieces", block, kind, grid.crs)
            dissolvers[kind].add(parts[kind].ids(index, parts[kind].count(index))[pieces["label"].to_numpy()], pieces.geometry.values)
            ids, geometries = dissolvers[kind].close(parts[kind].closing(index))
            tables[kind] = _table(ids, geometries, parts[kind], settings.min_pixels * grid.res**2, grid.crs)
            count, hectares = tally.counts[kind]
            tally.counts[kind] = (count + len(tables[kind]), hectares + float(tables[kind].area_ha.sum()))
        if forest_mask is not None:
            tally.forest_lost_ha += _forest_within(forest_mask, tables["loss"].geometry.values)
        yield tables


def _forest_within(mask_path: str, polygons) -> float:
    """Hectares of forest (mask value 1) inside polygons on the mask's grid, read a polygon's window at a time."""
    total = 0
    with rasterio.open(mask_path) as src:
        for polygon in polygons:
            window = from_bounds(*polygon.bounds, transform=src.transform).round_offsets().round_lengths()
            mask = src.read(1, window=window, boundless=True, fill_value=NODATA)
            inside = geometry_mask([polygon], mask.shape, src.window_transform(window), invert=True)
            total += int(((mask == 1) & inside).sum())
        res = src.res[0]
    return total * res * res / 1e4


def _table(ids: np.ndarray, geometries: np.ndarray, parts: BlockParts, min_area: float, crs) -> gpd.GeoDataFrame:
    """Whole parts as rows: their polygons without small holes, area and mean before, after and change."""
    if not len(ids):
        return empty_layer(COLUMNS, crs)
    sums, pixels = parts.sums()[ids], parts.sizes()[ids]
    geometry = [_without_small_holes(g, min_area) for g in geometries]
    return gpd.GeoDataFrame({"area_ha": shapely.area(geometry) / 1e4, "before_mean": sums[:, 0] / pixels,
                             "after_mean": sums[:, 1] / pixels, "change_mean": sums[:, 2] / pixels}, geometry=geometry, crs=crs)


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


def _without_small_holes(shape: shapely.Geometry, min_area: float) -> shapely.Geometry:
    """A polygon (or each of a multipolygon's) without its holes smaller than ``min_area`` m²: the gaps between
    the crowns of a harvested stand lost no height, but belong to the harvest."""
    polygons = shapely.get_parts(shape)
    kept = [shapely.Polygon(p.exterior, [r for r in p.interiors if shapely.Polygon(r).area >= min_area]) for p in polygons]
    return kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
