"""Trees from a canopy height map: tops (points with height) and crowns (polygons), streamed block by block.

The map is cut into blocks; each is read with a halo wide enough that the smoothing, the search
windows and the crowns of its trees are those of the whole map. A tree belongs to the block that
holds its top (the rule chips follow too), so a tree on a block edge is counted once and its crown
is whole. Blocks run on the block engine (:mod:`canopy.blockwise`): on threads in this process or on
a Dask cluster, kept beside the output until it is written, so an interrupted run resumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
import xarray as xr
from rasterio.transform import xy
from rasterio.windows import transform as window_transform

from canopy.analysis.allometry import Allometry, tree_biomass
from canopy.analysis.crowns import crown_labels
from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.analysis.polygons import read_polygons
from canopy.analysis.tree_tops import TreeParameters, find_tops, smoothed
from canopy.blockwise.layout import BlockLayout, inner, read_window
from canopy.blockwise.run import BlockRun, block_run
from canopy.blockwise.store import table_arrays, table_from
from canopy.blockwise.vectors import empty_layer, polygon_pieces
from canopy.choices import DEFAULT_BLOCK_SIZE
from canopy.cluster import ClusterSpec
from canopy.errors import EvaluationError, HeightMapError, OutputPathError
from canopy.grid import Block
from canopy.io.companions import UNCERTAINTY, companion
from canopy.io.vector_layers import write_layers
from canopy.io.vector_styles import crowns_qml, tops_qml

TOP_COLUMNS = {"tree_id": "int64", "height": "float64", "crown_diameter_m": "float64"}
CROWN_COLUMNS = {"tree_id": "int64", "height": "float64", "crown_area_m2": "float64", "crown_diameter_m": "float64"}



@dataclass(frozen=True)
class TreeLayers:
    """Trees as two layers in the map's CRS, one row per tree in both, ordered by ``tree_id``.

    ``tops``: points at the top pixel's centre, with ``tree_id`` (the top's pixel index in the map,
    ``row * width + col``, the same however the map is cut), ``height`` (m, the map's value there)
    and ``crown_diameter_m``. ``crowns``: polygons with ``tree_id``, ``height``, ``crown_area_m2``
    and ``crown_diameter_m`` (the diameter of the circle of the same area). With polygons given,
    both also hold ``polygon``, the position of the polygon holding the top.
    """

    tops: gpd.GeoDataFrame
    crowns: gpd.GeoDataFrame

    def __len__(self) -> int:
        return len(self.tops)

    @classmethod
    def read(cls, path: str | os.PathLike) -> TreeLayers:
        """The layers of a GeoPackage written by :func:`write_trees` (``canopy trees``).

        Raises
        ------
        EvaluationError
            If the file cannot be read or lacks the layers ``tops`` and ``crowns``.

        .. versionadded:: 0.3.0
        """
        try:
            return cls(gpd.read_file(path, layer="tops"), gpd.read_file(path, layer="crowns"))
        except Exception as exc:  # pyogrio raises its own kinds for unreadable files and missing layers
            raise EvaluationError(f"Trees {path} cannot be read ({exc}); pass the GeoPackage from `canopy trees`.") from None


def trees(
    chm: str | os.PathLike | xr.DataArray,
    polygons: str | os.PathLike | gpd.GeoDataFrame | None = None,
    *,
    parameters: TreeParameters = TreeParameters(),
    layer: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    client=None,
    cluster: ClusterSpec | None = None,
    allometry: Allometry | None = None,
) -> TreeLayers:
    """Find tree tops and delineate crowns in a canopy height map (predicted or lidar).

    Tops are local maxima of the lightly smoothed map in a window that grows with height (as
    lidR's variable-window ``lmf``); crowns follow Silva et al. (2016), as lidR's ``silva2016``:
    each pixel tall enough goes to its nearest top. :class:`~canopy.analysis.tree_tops.TreeParameters` documents each
    parameter and its default; all are in metres, so they hold from 0.1 m to 2 m pixels.

    Parameters
    ----------
    chm
        A canopy height map: a GeoTIFF path, or a DataArray from :func:`canopy.open` or
        :func:`canopy.predict`, in a projected CRS with pixels of 2 m or finer.
    polygons
        Only trees whose top lies in one of these polygons (a GeoDataFrame or vector file, any
        CRS); None for the whole map.
    parameters
        How tops are found and crowns delineated.
    layer
        The layer of a multi-layer vector file of polygons.
    block_size
        Block side in pixels; memory grows with its square, not with the map.
    client
        A ``dask.distributed.Client`` to compute blocks on (its workers must see the map's file).
    cluster
        Or a Dask cluster to start or connect to for the call.
    allometry
        Also give each tree's ``dbh_cm``, ``agb_kg``, ``agb_sd_kg``, ``carbon_kg`` and ``carbon_sd_kg``
        (:mod:`canopy.analysis.allometry`), the heights' uncertainty taken from the map's
        ``<name>.uncertainty.tif`` (or ``uncertainty`` coordinate) at each top when it has one.

    Returns
    -------
    TreeLayers

    Raises
    ------
    HeightMapError
        If the map has no CRS, is in degrees, has no no-data value, is not one band or is coarser than
        2 m; or if no polygon overlaps it.
    ImageryReadError
        If the map cannot be read (the message names the block).

    .. versionadded:: 0.3
    .. versionchanged:: 0.3.0
       ``allometry``.
    """
    parts = list(iter_trees(chm, polygons, parameters=parameters, layer=layer, block_size=block_size, client=client,
                            cluster=cluster, allometry=allometry))
    crs = parts[0].tops.crs

    def joined(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
        """The blocks' rows in one table, in tree_id order."""
        table = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
        return table.sort_values("tree_id", kind="stable", ignore_index=True)

    return TreeLayers(joined([p.tops for p in parts]), joined([p.crowns for p in parts]))


def iter_trees(
    chm: str | os.PathLike | xr.DataArray,
    polygons: str | os.PathLike | gpd.GeoDataFrame | None = None,
    *,
    parameters: TreeParameters = TreeParameters(),
    layer: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    client=None,
    cluster: ClusterSpec | None = None,
    allometry: Allometry | None = None,
) -> Iterator[TreeLayers]:
    """The trees of :func:`trees` block by block, in block order, so a writer keeps one block in memory.

    Takes the parameters of :func:`trees` and raises what it raises; yields at least one (maybe empty) part.

    .. versionadded:: 0.3
    """
    with _tree_run(chm, polygons, parameters, layer, block_size, client, cluster, allometry=allometry) as parts:
        yield from parts


@contextmanager
def _tree_run(chm, polygons, parameters: TreeParameters, layer: str | None, block_size: int, client,
              cluster: ClusterSpec | None, out: Path | None = None, resume: bool = False,
              allometry: Allometry | None = None) -> Iterator[Iterator[TreeLayers]]:
    """Check the map, compute every block's trees on the block engine, and give the blocks' trees in block order (with
    their biomass when an ``allometry`` is given), the run's lock (with ``out``) and store held until the block ends."""
    raster = open_height_raster(chm)
    area = None if polygons is None else _polygons_on(raster, polygons, layer)
    layout = BlockLayout(raster.height, raster.width, raster.transform, block_size)
    blocks = _blocks(layout, None if area is None else area.total_bounds)
    fingerprint = {"analysis": "trees", "map": raster.fingerprint, "parameters": asdict(parameters), "block_size": block_size}
    with block_run(out, fingerprint, resume=resume, client=client, cluster=cluster) as run:
        run.stage("trees", partial(tree_kernel, run.shareable(raster), parameters), blocks)
        parts = _stored_parts(run, blocks, raster.crs, area)
        yield parts if allometry is None else (with_biomass(part, allometry, _height_spread(chm)) for part in parts)


def _stored_parts(run: BlockRun, blocks: list[Block], crs, area: gpd.GeoDataFrame | None) -> Iterator[TreeLayers]:
    """The trees the kernel stored, block by block (within the polygons), an empty part first for the layers' columns."""
    yield _within(_empty(crs), area)
    for block in blocks:
        arrays = run.store.load_all("trees", block)
        part = TreeLayers(table_from(arrays, "tops", crs), table_from(arrays, "crowns", crs))
        if len(part):
            yield _within(part, area)


def write_trees(
    chm: str | os.PathLike | xr.DataArray,
    out: str | os.PathLike,
    polygons: str | os.PathLike | gpd.GeoDataFrame | None = None,
    *,
    parameters: TreeParameters = TreeParameters(),
    layer: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    client=None,
    cluster: ClusterSpec | None = None,
    resume: bool = False,
    allometry: Allometry | None = None,
) -> int:
    """Write the trees of :func:`trees` to a GeoPackage block by block: layers ``tops`` and ``crowns``, each with its
    default QGIS style; nothing is at ``out`` until it is whole.

    Takes the parameters of :func:`trees` (``allometry`` included: its equations are named in the styles'
    description), and ``resume``: reuse the blocks a killed run with the same map and settings kept beside ``out``.

    Returns
    -------
    int
        The number of trees written.

    Raises
    ------
    OutputPathError
        If ``out`` does not end in ``.gpkg``.
    HeightMapError, ImageryReadError, DistributedError, ResumeError
        As :func:`trees`; if the cluster cannot be reached; if the kept blocks were made with other settings.

    .. versionadded:: 0.3.0
    """
    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise OutputPathError(f"Output {out} must end in .gpkg (a GeoPackage with the layers tops and crowns).")
    said = "written by canopy trees" + ("" if allometry is None else f"; biomass by {allometry.describe()}")
    with _tree_run(chm, polygons, parameters, layer, block_size, client, cluster, out, resume, allometry) as parts:
        counts = write_layers(out, ({"tops": p.tops, "crowns": p.crowns} for p in parts), {"tops": "Point", "crowns": "Polygon"},
                              {"tops": tops_qml(allometry is not None), "crowns": crowns_qml()}, said)
    return counts["tops"]


def tree_kernel(raster: HeightRaster, parameters: TreeParameters, block: Block) -> dict[str, np.ndarray]:
    """The block engine's kernel: a block's trees (:func:`block_trees`) as arrays to store."""
    found = block_trees(raster, block, parameters)
    return {**table_arrays(found.tops, "tops"), **table_arrays(found.crowns, "crowns")}


def block_trees(raster: HeightRaster, block: Block, parameters: TreeParameters) -> TreeLayers:
    """The trees whose tops lie in one block, their crowns whole (a pure function of its arguments)."""
    res = raster.res
    halo = parameters.halo(res)
    window = read_window(block, halo)
    heights = raster.read_window(window)
    surface = smoothed(heights, res, parameters.smoothing)
    rows, cols = find_tops(surface, res, parameters)
    labels = crown_labels(surface, rows, cols, res, parameters)
    rows_in, cols_in = inner(block, halo)
    own = (rows >= rows_in.start) & (rows < rows_in.stop) & (cols >= cols_in.start) & (cols < cols_in.stop)
    if not own.any():
        return _empty(raster.crs)
    owned = np.concatenate([[False], own])[labels]
    transform = window_transform(window, raster.transform)
    xs, ys = xy(transform, rows, cols)
    centres = shapely.points(xs, ys)
    crowns: dict[int, shapely.Geometry] = {}
    values, pieces = polygon_pieces(np.where(owned, labels, 0), transform)
    for value, part in zip(values, pieces):
        k = int(value) - 1
        if part.contains(centres[k]):  # of a crown cut in pieces, the piece that holds its top
            crowns[k] = part
    index = np.flatnonzero(own)
    area = np.array([crowns[k].area for k in index])
    diameter = 2 * np.sqrt(area / np.pi)
    tree_id = (rows[index] + window.row_off).astype(np.int64) * raster.width + (cols[index] + window.col_off)
    height = heights[rows[index], cols[index]].astype(np.float64)
    tops = gpd.GeoDataFrame({"tree_id": tree_id, "height": height, "crown_diameter_m": diameter},
                            geometry=centres[index], crs=raster.crs)
    crown_table = gpd.GeoDataFrame({"tree_id": tree_id, "height": height, "crown_area_m2": area, "crown_diameter_m": diameter},
                                   geometry=[crowns[k] for k in index], crs=raster.crs)
    order = np.argsort(tree_id, kind="stable")
    return TreeLayers(tops.iloc[order].reset_index(drop=True), crown_table.iloc[order].reset_index(drop=True))


def _blocks(layout: BlockLayout, bounds: np.ndarray | None) -> list[Block]:
    """The blocks covering the map, row by row (only those meeting ``bounds``, the polygons' extent, when given)."""
    blocks = layout.blocks
    if bounds is None:
        return blocks
    c0, r0 = ~layout.transform * (bounds[0], bounds[3])
    c1, r1 = ~layout.transform * (bounds[2], bounds[1])
    return [b for b in blocks if b.row + b.height > r0 and b.row < r1 and b.col + b.width > c0 and b.col < c1]


def _polygons_on(raster: HeightRaster, polygons, layer: str | None) -> gpd.GeoDataFrame:
    """The polygons in the map's CRS; refused when none overlaps the map."""
    table = read_polygons(polygons, layer).to_crs(raster.crs)
    if not table.intersects(shapely.box(*raster.bounds)).any():
        raise HeightMapError(f"No polygon of {polygons if not isinstance(polygons, gpd.GeoDataFrame) else 'the table'} "
                             f"overlaps map {raster.name}; check that they cover the same place.")
    return table


def _within(part: TreeLayers, area: gpd.GeoDataFrame | None) -> TreeLayers:
    """The trees whose top lies in one of the polygons, with the position of that polygon (all trees when None)."""
    if area is None:
        return part
    tree, polygon = shapely.STRtree(area.geometry.values).query(part.tops.geometry.values, predicate="within")
    first = pd.Series(polygon).groupby(tree).min()
    keep = first.index.to_numpy()
    tops = part.tops.iloc[keep].assign(polygon=first.to_numpy()).reset_index(drop=True)
    crowns = part.crowns.iloc[keep].assign(polygon=first.to_numpy()).reset_index(drop=True)
    return TreeLayers(tops, crowns)


BIOMASS_COLUMNS = ("dbh_cm", "agb_kg", "agb_sd_kg", "carbon_kg", "carbon_sd_kg")


def with_biomass(part: TreeLayers, allometry: Allometry, spread: Callable[[np.ndarray, np.ndarray], np.ndarray] | None) -> TreeLayers:
    """The trees with their DBH, AGB and carbon (:data:`BIOMASS_COLUMNS`), the height's standard deviation read by
    ``spread`` at the tops' (x, y) when the map has an uncertainty."""
    tops = part.tops
    sd = None if spread is None or not len(tops) else spread(tops.geometry.x.to_numpy(), tops.geometry.y.to_numpy())
    found = tree_biomass(allometry, tops["tree_id"].to_numpy(), tops["height"].to_numpy(), tops["crown_diameter_m"].to_numpy(), sd)
    columns = {name: getattr(found, name) for name in BIOMASS_COLUMNS}
    return TreeLayers(tops.assign(**columns), part.crowns.assign(**columns))  # both layers hold the trees in one order


def _height_spread(chm) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """A reader of the map's uncertainty (m) at points, from its file beside the map or its coordinate; None without."""
    if isinstance(chm, xr.DataArray):
        if UNCERTAINTY not in chm.coords:
            return None
        layer = chm.coords[UNCERTAINTY]
        return lambda xs, ys: layer.sel(x=xr.DataArray(xs), y=xr.DataArray(ys), method="nearest").to_numpy()
    path = companion(chm, UNCERTAINTY)
    if not path.is_file():
        return None

    def read(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        with rasterio.open(path) as src:
            return np.array([v[0] for v in src.sample(zip(xs, ys), masked=True)], float)

    return read


def _empty(crs) -> TreeLayers:
    """Trees with the layers' columns and no row."""
    return TreeLayers(empty_layer(TOP_COLUMNS, crs), empty_layer(CROWN_COLUMNS, crs))
