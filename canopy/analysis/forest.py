"""Forest / non-forest from a canopy height map under the FAO definition, streamed block by block.

Three passes over blocks keep memory to a block and the edges of its parts:

1. forest candidates per block (:mod:`canopy.analysis.forest_rule`, read with a halo so they are
   the whole map's), stored as one byte per pixel in a scratch folder; their connected parts are
   joined across blocks (:mod:`canopy.analysis.components`) to learn each part's whole area;
2. forest is the candidate parts larger than the minimum area; the non-forest parts are joined
   the same way, noting which touch no-data or the map's edge;
3. non-forest parts smaller than the minimum area that lie wholly inside forest become forest
   (FAO counts small clearings, roads and firebreaks in forest as forest); the mask is written,
   and its forest is cut into polygons, which are dissolved across block edges.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
import shapely
import xarray as xr
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage

from canopy.analysis.components import EIGHT, BlockParts, label
from canopy.analysis.forest_rule import ForestDefinition, candidates
from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.errors import OutputPathError
from canopy.grid import iter_blocks
from canopy.io.atomic import atomic_path
from canopy.io.gdal_env import run_env
from canopy.io.output_lock import output_lock, scratch_folder
from canopy.io.qml import paletted_qml
from canopy.io.vector_layers import write_layers
from canopy.io.vector_styles import forest_qml

NODATA = 255
FOREST_CLASSES = [(0, "#efe9d6", "non-forest"), (1, "#1e7832", "forest")]
"""The mask's values, colours and legend labels (255 is no data)."""


@dataclass(frozen=True)
class ForestMap:
    """A forest / non-forest map: the mask, its forest as polygons, and the definition applied.

    ``mask`` is uint8 (1 forest, 0 non-forest, 255 no data) on the height map's grid; ``polygons``
    are the forest's connected parts with ``area_ha``, in the map's CRS.
    """

    mask: xr.DataArray
    polygons: gpd.GeoDataFrame
    definition: ForestDefinition

    @property
    def forest_area_ha(self) -> float:
        """The forest's area in hectares."""
        return float(self.polygons.area_ha.sum())

    @property
    def forest_fraction(self) -> float:
        """The share of the map's valid area that is forest."""
        values = np.asarray(self.mask.values)
        valid = values != NODATA
        return float((values[valid] == 1).mean()) if valid.any() else float("nan")


def forest(
    chm: str | os.PathLike | xr.DataArray,
    out: str | os.PathLike | None = None,
    *,
    definition: ForestDefinition = ForestDefinition(),
    block_size: int = 2048,
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

    Returns
    -------
    ForestMap

    Raises
    ------
    HeightMapError
        If the map has no CRS, is in degrees, has no no-data value, or its pixels are coarser
        than half the minimum width.
    OutputPathError
        If ``out`` does not end in ``.gpkg`` or its folder does not exist.

    .. versionadded:: 0.3
    """
    raster = open_height_raster(chm, max_res=definition.min_width / 2)
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".gpkg" or not out.parent.is_dir():
            raise OutputPathError(f"Output {out} must be a .gpkg in an existing folder (the mask is written beside it as .tif).")
    with ExitStack() as stack:
        if out is not None:
            stack.enter_context(output_lock(out, [out.with_suffix(".tif")]))
        scratch = Path(stack.enter_context(scratch_folder(out)))
        with run_env():
            mask_file, polygons = _stream(raster, definition, block_size, scratch)
        if out is None:
            with rasterio.open(mask_file) as src:
                mask = _as_dataarray(src.read(1), raster)
            return ForestMap(mask, polygons, definition)
        tif = out.with_suffix(".tif")
        with atomic_path(tif) as tmp:
            rasterio.shutil.copy(mask_file, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEW_RESAMPLING="MODE")
        with atomic_path(tif.with_suffix(".qml")) as tmp:
            tmp.write_text(paletted_qml(FOREST_CLASSES))
        write_layers(out, [{"forest": polygons}], {"forest": "Polygon"}, {"forest": forest_qml()}, "written by canopy forest")
    import rioxarray

    return ForestMap(rioxarray.open_rasterio(tif, masked=False).squeeze("band", drop=True), polygons, definition)


def _stream(raster: HeightRaster, definition: ForestDefinition, size: int, scratch: Path) -> tuple[Path, gpd.GeoDataFrame]:
    """The three passes: return the mask's GeoTIFF (in ``scratch``) and the forest polygons."""
    res = raster.res
    halo = definition.halo(res)
    min_pixels = definition.min_area_ha * 1e4 / res**2
    grid = (-(-raster.height // size), -(-raster.width // size))
    blocks = {(b.row // size, b.col // size): b for b in iter_blocks(raster.height, raster.width, size)}
    stored = lambda i, j: scratch / f"c{i}_{j}.npy"  # noqa: E731  (a block's candidates: 1, 0, or NODATA)
    candidate_parts = BlockParts()
    for (i, j), b in blocks.items():
        heights = raster.read(b.row - halo, b.col - halo, b.height + 2 * halo, b.width + 2 * halo)
        inner = (slice(halo, halo + b.height), slice(halo, halo + b.width))
        found = candidates(heights, res, definition)[inner]
        valid = np.isfinite(heights[inner])
        np.save(stored(i, j), np.where(valid, found, NODATA).astype(np.uint8))
        candidate_parts.add((i, j), *label(found))
    candidate_parts.join()

    def split(i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """A block's forest (large candidate parts), its non-forest labels and their count."""
        store = np.load(stored(i, j))
        labels, count = label(store == 1)
        area, _ = candidate_parts.whole((i, j), count)
        big = area[labels] > min_pixels
        rest, rest_count = label((store == 0) | ((store == 1) & ~big))
        return store, big, rest, rest_count

    open_parts = BlockParts()
    for i, j in blocks:
        store, _, rest, count = split(i, j)
        edge = ndimage.binary_dilation(_nodata_ring(stored, i, j, grid, store), EIGHT)[1:-1, 1:-1]
        open_parts.add((i, j), rest, count, np.bincount(rest[edge & (rest > 0)], minlength=count + 1)[1:] > 0)
    open_parts.join()

    profile = dict(driver="GTiff", width=raster.width, height=raster.height, count=1, dtype="uint8", nodata=NODATA,
                   crs=raster.crs, transform=raster.transform, tiled=True, blockxsize=512, blockysize=512, compress="deflate")
    mask_file = scratch / "mask.tif"
    pieces: list[shapely.Geometry] = []
    with rasterio.open(mask_file, "w", **profile) as dst:
        for (i, j), b in blocks.items():
            store, big, rest, count = split(i, j)
            area, touches = open_parts.whole((i, j), count)
            enclosed = (rest > 0) & (area[rest] <= min_pixels) & ~touches[rest]
            final = big | enclosed
            dst.write(np.where(store == NODATA, NODATA, final).astype(np.uint8)[None], window=Window(b.col, b.row, b.width, b.height))
            transform = raster.transform * raster.transform.translation(b.col, b.row)
            pieces.extend(shapely.geometry.shape(g) for g, _ in shapes(final.astype(np.uint8), mask=final, transform=transform))
            stored(i, j).unlink()
    return mask_file, _dissolved(pieces, raster.crs)


def _nodata_ring(stored, i: int, j: int, grid: tuple[int, int], store: np.ndarray) -> np.ndarray:
    """The block's no-data mask with a one-pixel ring from its neighbours (outside the map counts as no data)."""
    ring = np.ones((store.shape[0] + 2, store.shape[1] + 2), bool)
    ring[1:-1, 1:-1] = store == NODATA
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ni, nj = i + di, j + dj
            if (di, dj) == (0, 0) or not (0 <= ni < grid[0] and 0 <= nj < grid[1]):
                continue
            other = np.load(stored(ni, nj), mmap_mode="r")
            rows = slice(1, -1) if di == 0 else (slice(0, 1) if di < 0 else slice(-1, None))
            cols = slice(1, -1) if dj == 0 else (slice(0, 1) if dj < 0 else slice(-1, None))
            theirs_rows = slice(None) if di == 0 else (slice(-1, None) if di < 0 else slice(0, 1))
            theirs_cols = slice(None) if dj == 0 else (slice(-1, None) if dj < 0 else slice(0, 1))
            ring[rows, cols] = other[theirs_rows, theirs_cols] == NODATA
    return ring


def _dissolved(pieces: list[shapely.Geometry], crs) -> gpd.GeoDataFrame:
    """The forest's connected parts from its pieces cut at block edges, largest first, with their area in hectares."""
    if not pieces:
        return gpd.GeoDataFrame({"area_ha": np.zeros(0)}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    parts = shapely.get_parts(shapely.union_all(pieces))
    table = gpd.GeoDataFrame({"area_ha": shapely.area(parts) / 1e4}, geometry=parts, crs=crs)
    return table.sort_values("area_ha", ascending=False, ignore_index=True)


def _as_dataarray(values: np.ndarray, raster: HeightRaster) -> xr.DataArray:
    """The mask as a DataArray on the map's grid."""
    import rioxarray  # noqa: F401  (the .rio accessor)

    t = raster.transform
    coords = {"y": t.f + (np.arange(raster.height) + 0.5) * t.e, "x": t.c + (np.arange(raster.width) + 0.5) * t.a}
    data = xr.DataArray(values, dims=("y", "x"), coords=coords, name="forest")
    return data.rio.write_crs(raster.crs).rio.write_transform(t).rio.write_nodata(NODATA)
