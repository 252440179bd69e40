"""Forest / non-forest from a canopy height map under the FAO definition, on the block engine.

Three stages over blocks (:mod:`canopy.blockwise`) keep memory to a block and the edges of its parts:

1. forest candidates per block (:mod:`canopy.analysis.forest_rule`, read with a halo so they are
   the whole map's), stored as one byte per pixel; their connected parts are joined across blocks
   (:mod:`canopy.blockwise.parts`) to learn each part's whole area;
2. forest is the candidate parts larger than the minimum area; the non-forest parts are joined
   the same way, noting which touch no-data or the map's edge;
3. non-forest parts smaller than the minimum area that lie wholly inside forest become forest
   (FAO counts small clearings, roads and firebreaks in forest as forest); the mask goes to the
   COG writer, and its forest is cut into polygons, dissolved by part as each part is whole.

Each stage runs on threads here or on a Dask cluster, and its blocks are kept beside the output
until the run is complete, so an interrupted run resumes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from scipy import ndimage

from canopy.analysis.forest_rule import ForestDefinition, candidates
from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.blockwise.layout import BlockLayout, block_window, inner, read_window
from canopy.blockwise.parts import EIGHT, joined_parts, label, part_summary
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
from canopy.errors import HeightMapError, OutputPathError
from canopy.grid import Block
from canopy.io.atomic import atomic_path
from canopy.io.cog import Band
from canopy.io.qml import paletted_qml
from canopy.io.vector_layers import write_layers
from canopy.io.vector_styles import forest_qml

NODATA = 255
FOREST_CLASSES = [(0, "#efe9d6", "non-forest"), (1, "#1e7832", "forest")]
"""The mask's values, colours and legend labels (255 is no data)."""


MASK_BAND = Band("forest (1) / non-forest (0)", "uint8", NODATA, {value: colour for value, colour, _ in FOREST_CLASSES})
POLYGON_COLUMNS = {"area_ha": "float64"}


@dataclass(frozen=True)
class ForestMap:
    """A forest / non-forest map: the mask, its forest as polygons, and the definition applied.

    ``mask`` is uint8 (1 forest, 0 non-forest, 255 no data) on the height map's grid (read lazily
    from its COG when written); ``polygons`` are the forest's connected parts with ``area_ha``, in
    the map's CRS (read from the GeoPackage when written, ``path``). ``forest_area_ha`` and
    ``forest_fraction`` (the share of the valid area that is forest) are counted while the map is made.
    """

    mask: xr.DataArray
    definition: ForestDefinition
    forest_area_ha: float
    forest_fraction: float
    polygon_count: int
    path: Path | None = None
    table: gpd.GeoDataFrame | None = None

    @property
    def polygons(self) -> gpd.GeoDataFrame:
        """The forest's polygons, largest first (read from ``path`` when they were written)."""
        table = self.table if self.table is not None else gpd.read_file(self.path, layer="forest")
        return table.sort_values("area_ha", ascending=False, ignore_index=True)


def forest(
    chm: str | os.PathLike | xr.DataArray,
    out: str | os.PathLike | None = None,
    *,
    definition: ForestDefinition = ForestDefinition(),
    block_size: int = DEFAULT_BLOCK_SIZE,
    client=None,
    cluster: ClusterSpec | None = None,
    resume: bool = False,
) -> ForestMap:
    """Map forest and non-forest under the FAO definition (or another national one) from a canopy height map.

    Parameters
    ----------
    chm
        A canopy height map (GeoTIFF path or DataArray) in a projected CRS, with pixels no coarser
        than half the minimum width.
    out
        A GeoPackage path: the forest polygons go there (layer ``forest``, styled), the mask beside
        it as a COG (``<name>.tif`` with its ``.qml`` style); None keeps both in memory.
    definition
        The thresholds; :class:`~canopy.analysis.forest_rule.ForestDefinition` documents each
        and :mod:`canopy.analysis.forest_rule` how cover and width are measured.
    block_size
        Block side in pixels; memory grows with its square, not with the map.
    client, cluster
        A Dask client, or a cluster to start or connect to, to compute blocks on; neither for threads here.
    resume
        Reuse the blocks a killed run with the same map and settings kept beside ``out``.

    Returns
    -------
    ForestMap

    Raises
    ------
    HeightMapError
        If the map has no CRS, is in degrees, has no no-data value, is not one band, or its pixels are coarser
        than half the minimum width.
    ImageryReadError
        If the map cannot be read (the message names the block).
    OutputPathError
        If ``out`` does not end in ``.gpkg`` or its folder does not exist.
    ResumeError
        If ``resume`` is set and the kept blocks were made with other settings.

    .. versionadded:: 0.3
    """
    raster = open_height_raster(chm, max_res=definition.min_width / 2)
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".gpkg" or not out.parent.is_dir():
            raise OutputPathError(f"Output {out} must be a .gpkg in an existing folder (the mask is written beside it as .tif).")
    return forest_of(raster, out, definition, block_size, client=client, cluster=cluster, resume=resume)


def forest_of(raster: HeightRaster, out: Path | None, definition: ForestDefinition, block_size: int, *, client=None,
              cluster: ClusterSpec | None = None, resume: bool = False, mask_file: Path | None = None) -> ForestMap:
    """:func:`forest` of a checked map (also one read on another grid, as ``change`` does); without ``out``, the mask
    is also written to ``mask_file`` when given."""
    if raster.res > definition.min_width / 2:
        raise HeightMapError(f"Map {raster.name} has {raster.res:g} m pixels, too coarse for a minimum forest width of "
                             f"{definition.min_width:g} m; use a map of {definition.min_width / 2:g} m or finer.")
    layout = BlockLayout(raster.height, raster.width, raster.transform, block_size)
    fingerprint = {"analysis": "forest", "map": raster.fingerprint, "definition": asdict(definition), "block_size": block_size}
    tif = None if out is None else out.with_suffix(".tif")
    with block_run(out, fingerprint, written=[] if tif is None else [tif], resume=resume, client=client, cluster=cluster) as run:
        staged = run.scratch / "mask.tif"
        valid, forested = _mask(run, layout, run.shareable(raster), definition, staged)
        area_ha, fraction = forested * raster.res**2 / 1e4, forested / valid if valid else float("nan")
        polygons = _polygons(run, layout, raster.crs)
        if out is None:
            table = concat_layers(list(polygons), raster.crs)
            mask = _open_mask(staged).load()
            if mask_file is not None:
                os.replace(staged, mask_file)
            return ForestMap(mask, definition, area_ha, fraction, len(table), None, table)
        for sidecar in (".qml", ".tif"):  # the mask lands just before the polygons, the run's output
            os.replace(staged.with_suffix(sidecar), tif.with_suffix(sidecar))
        totals = write_layers(out, ({"forest": table} for table in polygons), {"forest": "Polygon"},
                              {"forest": forest_qml()}, "written by canopy forest")
    return ForestMap(_open_mask(tif), definition, area_ha, fraction, totals["forest"], out)


def _mask(run: BlockRun, layout: BlockLayout, raster: HeightRaster, definition: ForestDefinition,
          target: Path) -> tuple[int, int]:
    """The three stages; the mask written as a COG at ``target`` (with its style beside it); return its valid and its
    forest pixels (the polygons are these pixels, so their area is the forest pixels')."""
    res = raster.res
    min_pixels = definition.min_area_ha * 1e4 / res**2
    blocks, folder = layout.blocks, str(run.store.dir)
    run.stage("candidates", partial(_candidates_kernel, raster, definition), blocks)
    whole = joined_parts(run.store, layout, "candidates", "candidates")
    for block in blocks:
        area, _ = whole.whole(layout.index(block), whole.count(layout.index(block)))
        run.store.save("big", block, {"big": area[1:] > min_pixels})
    run.stage("open", partial(_open_kernel, folder, layout), blocks)
    rest = joined_parts(run.store, layout, "open", "open")
    for block in blocks:
        area, touches = rest.whole(layout.index(block), rest.count(layout.index(block)))
        run.store.save("enclosed", block, {"enclosed": (area[1:] <= min_pixels) & ~touches[1:]})
    run.raster_stage("final", partial(_final_kernel, folder, layout), layout, raster.grid, "mask", target,
                     {"canopy_forest_definition": str(asdict(definition))}, MASK_BAND)
    with atomic_path(target.with_suffix(".qml")) as tmp:
        tmp.write_text(paletted_qml(FOREST_CLASSES))
    totals = sum(run.store.load("final", block, "counts") for block in blocks)
    return int(totals[0]), int(totals[1])


def _candidates_kernel(raster: HeightRaster, definition: ForestDefinition, block: Block) -> dict[str, np.ndarray]:
    """Stage 1: a block's candidates (1, 0, or NODATA) and the summary of their parts."""
    halo = definition.halo(raster.res)
    window = read_window(block, halo)
    heights = raster.read_window(window)
    found = candidates(heights, raster.res, definition)[inner(block, halo)]
    store = np.where(np.isfinite(heights[inner(block, halo)]), found, NODATA).astype(np.uint8)
    nodata = store == NODATA
    return {"store": store, **part_summary(*label(store == 1), prefix="candidates"),
            "nodata.top": nodata[0], "nodata.bottom": nodata[-1], "nodata.left": nodata[:, 0], "nodata.right": nodata[:, -1]}


def _split(store: BlockStore, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A block's candidates, its forest (large candidate parts), its non-forest labels and their count."""
    candidates_store = store.load("candidates", block, "store")
    labels, _ = label(candidates_store == 1)
    big = np.concatenate([[False], store.load("big", block, "big")])[labels]
    rest, rest_count = label((candidates_store == 0) | ((candidates_store == 1) & ~big))
    return candidates_store, big, rest, rest_count


def _open_kernel(folder: str, layout: BlockLayout, block: Block) -> dict[str, np.ndarray]:
    """Stage 2: a block's non-forest parts, flagged where they touch no-data or the map's edge."""
    store = BlockStore.attach(folder)
    candidates_store, _, rest, count = _split(store, block)
    edge = ndimage.binary_dilation(_nodata_ring(store, layout, block, candidates_store), EIGHT)[1:-1, 1:-1]
    touches = np.bincount(rest[edge & (rest > 0)], minlength=count + 1)[1:] > 0
    return part_summary(rest, count, flags=touches, prefix="open")


def _final_kernel(folder: str, layout: BlockLayout, block: Block) -> dict[str, np.ndarray]:
    """Stage 3: a block's mask, its forest's pieces (labelled per block) and the summary of their parts."""
    store = BlockStore.attach(folder)
    candidates_store, big, rest, _ = _split(store, block)
    enclosed = np.concatenate([[False], store.load("enclosed", block, "enclosed")])[rest]
    final = big | enclosed
    labels, count = label(final)
    values, pieces = polygon_pieces(labels, layout.transform_of(block_window(block)))
    valid = candidates_store != NODATA
    pieces_table = gpd.GeoDataFrame({"label": values}, geometry=list(pieces), crs=None)
    return {"mask": np.where(valid, final, NODATA).astype(np.uint8), **part_summary(labels, count, prefix="forest"),
            **table_arrays(pieces_table, "pieces"), "counts": np.array([valid.sum(), (final & valid).sum()], np.int64)}


def _polygons(run: BlockRun, layout: BlockLayout, crs) -> Iterator[gpd.GeoDataFrame]:
    """The forest's parts as polygons, one table per block of the parts that end in it (the first table empty)."""
    parts = joined_parts(run.store, layout, "final", "forest")
    dissolver = Dissolver()
    yield empty_layer(POLYGON_COLUMNS, crs)
    for block in layout.blocks:
        index = layout.index(block)
        pieces = run.store.load_table("final", block, "pieces", crs)
        dissolver.add(parts.ids(index, parts.count(index))[pieces["label"].to_numpy()], pieces.geometry.values)
        _, geometries = dissolver.close(parts.closing(index))
        if len(geometries):
            yield gpd.GeoDataFrame({"area_ha": shapely.area(geometries) / 1e4}, geometry=list(geometries), crs=crs)


def _nodata_ring(store: BlockStore, layout: BlockLayout, block: Block, candidates_store: np.ndarray) -> np.ndarray:
    """The block's no-data mask with a one-pixel ring from its neighbours' edges (outside the map counts as no data)."""
    ring = np.ones((candidates_store.shape[0] + 2, candidates_store.shape[1] + 2), bool)
    ring[1:-1, 1:-1] = candidates_store == NODATA
    i, j = layout.index(block)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            other = layout.block_at(i + di, j + dj)
            if (di, dj) == (0, 0) or other is None:
                continue
            side = "top" if di > 0 else "bottom"
            if di == 0:
                column = store.load("candidates", other, "nodata.left" if dj > 0 else "nodata.right")
                ring[1:-1, -1 if dj > 0 else 0] = column
                continue
            row = store.load("candidates", other, f"nodata.{side}")
            target = -1 if di > 0 else 0
            if dj == 0:
                ring[target, 1:-1] = row
            else:
                ring[target, -1 if dj > 0 else 0] = row[0] if dj > 0 else row[-1]
    return ring


def _open_mask(path: Path) -> xr.DataArray:
    """The mask COG as a DataArray (read lazily)."""
    import rioxarray

    return rioxarray.open_rasterio(path, masked=False).squeeze("band", drop=True).rename("forest")
