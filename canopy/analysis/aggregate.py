"""Per-cell grids of a canopy height map: height statistics, cover and gaps, and with trees their density, top height,
biomass and carbon, on cells of ``res`` metres aligned to whole multiples of ``res`` (so grids of one region line up).

A cell's statistics come from the map's pixels whose centres fall in it; a cell with less than
``min_valid_fraction`` of its pixels valid is NaN in every band. Definitions:

- ``mean``, ``p95``, ``max``: of the valid heights (m);
- ``cover_2m``, ``cover_5m``: the share of valid pixels taller than 2 and 5 m;
- ``gap_fraction``: the share of valid pixels in canopy gaps, as ``canopy stats`` defines them
  (:mod:`canopy.analysis.stand_structure`: patches lower than 2 m of at least 10 m², seen whole
  across cell and block edges);
- ``valid_fraction``: the share of the cell's pixels with a height.

With trees (``canopy trees`` with an allometry), each tree counts in the cell holding its top:

- ``trees_per_ha``: trees over the cell's valid area;
- ``top_height``: the mean height of the ``round(100 x valid ha)`` tallest (at least one);
- ``agb`` and ``carbon`` (Mg/ha): the trees' sum over the cell's valid area;
- ``agb_sd`` and ``carbon_sd``: their standard deviations, the trees' errors shared as
  :func:`canopy.analysis.allometry.total` says.

The map is read in blocks of whole cells (on the block engine: threads here or Dask, resumable);
the grid, which is small (one value per cell and band), is assembled in memory and written as one
multi-band COG.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import xarray as xr
from affine import Affine

from canopy.analysis.allometry import total
from canopy.analysis.height_raster import HeightRaster, open_height_raster
from canopy.analysis.stand_structure import TOPS_PER_HA, gap_mask, gap_margin
from canopy.blockwise.run import block_run
from canopy.choices import DEFAULT_BLOCK_SIZE
from canopy.cluster import ClusterSpec
from canopy.errors import CanopyError, OutputPathError
from canopy.grid import Block
from canopy.io.atomic import atomic_path
from canopy.io.qml import band_qml, style_range

MAP_BANDS = {
    "mean": ("mean canopy height", "m"),
    "p95": ("95th percentile of canopy height", "m"),
    "max": ("maximum canopy height", "m"),
    "cover_2m": ("canopy cover above 2 m", "fraction"),
    "cover_5m": ("canopy cover above 5 m", "fraction"),
    "gap_fraction": ("share of the valid area in canopy gaps", "fraction"),
    "valid_fraction": ("share of the cell with a height", "fraction"),
}
TREE_BANDS = {
    "trees_per_ha": ("trees per hectare", "1/ha"),
    "top_height": ("top height: mean of the 100 tallest trees per ha", "m"),
    "agb": ("aboveground biomass", "Mg/ha"),
    "agb_sd": ("standard deviation of aboveground biomass", "Mg/ha"),
    "carbon": ("aboveground carbon", "Mg C/ha"),
    "carbon_sd": ("standard deviation of aboveground carbon", "Mg C/ha"),
}
GAP_HEIGHT, GAP_MIN_AREA = 2.0, 10.0


class AggregateError(CanopyError, ValueError):
    """A resolution or setting an aggregate cannot use."""


@dataclass(frozen=True)
class CellGrid:
    """Cells of ``res`` m over a map: ``rows`` x ``cols`` from ``(left, top)`` (whole multiples of ``res``), ``n`` map
    pixels a side, the map's pixel ``i`` in cell ``(i + shift) // n`` along each axis."""

    res: float
    left: float
    top: float
    rows: int
    cols: int
    n: int
    shift_row: int
    shift_col: int

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)

    def blocks(self, cells: int, height: int, width: int) -> list[Block]:
        """The map's windows of ``cells`` x ``cells`` whole cells (clipped to the map), row by row."""
        found = []
        for r in range(0, self.rows, cells):
            top, bottom = max(0, r * self.n - self.shift_row), min(height, (r + cells) * self.n - self.shift_row)
            for c in range(0, self.cols, cells):
                left, right = max(0, c * self.n - self.shift_col), min(width, (c + cells) * self.n - self.shift_col)
                if bottom > top and right > left:
                    found.append(Block(top, left, bottom - top, right - left))
        return found

    def cell_of(self, row: int, col: int) -> tuple[int, int]:
        """The cell holding the map's pixel (row, col)."""
        return (row + self.shift_row) // self.n, (col + self.shift_col) // self.n


def cell_grid(raster: HeightRaster, res: float) -> CellGrid:
    """The cells of ``res`` m over a map.

    Raises
    ------
    AggregateError
        If ``res`` is not a whole multiple of the map's pixel size.
    """
    pixel = raster.res
    n = round(res / pixel)
    if n < 1 or abs(n * pixel - res) > 1e-6 * res:
        suggestion = max(1, round(res / pixel)) * pixel
        raise AggregateError(f"Cell size {res:g} m is not a whole multiple of the map's {pixel:g} m pixels; pass e.g. "
                             f"--res {suggestion:g}.")
    left_map, top_map = raster.transform.c, raster.transform.f
    left, top = math.floor(left_map / res + 1e-9) * res, math.ceil(top_map / res - 1e-9) * res
    right_map, bottom_map = left_map + raster.width * pixel, top_map - raster.height * pixel
    cols, rows = math.ceil((right_map - left) / res - 1e-9), math.ceil((top - bottom_map) / res - 1e-9)
    shift_col = math.floor((left_map - left) / pixel + 0.5)  # pixel i's centre lies in cell floor((i + shift) / n)
    shift_row = math.floor((top - top_map) / pixel + 0.5)
    return CellGrid(res, left, top, rows, cols, n, shift_row, shift_col)


def _cells_kernel(raster: HeightRaster, grid: CellGrid, block: Block) -> dict[str, np.ndarray]:
    """A block's cells: each band of :data:`MAP_BANDS` (before the valid-fraction rule) and its cell origin."""
    margin = gap_margin(raster.res, GAP_MIN_AREA)
    heights = raster.read(block.row - margin, block.col - margin, block.height + 2 * margin, block.width + 2 * margin)
    gaps = gap_mask(heights, raster.res, GAP_HEIGHT, GAP_MIN_AREA)[margin:-margin, margin:-margin]
    heights = heights[margin:-margin, margin:-margin]
    r0, c0 = grid.cell_of(block.row, block.col)
    r1, c1 = grid.cell_of(block.row + block.height - 1, block.col + block.width - 1)
    n = grid.n
    pad_top, pad_left = block.row + grid.shift_row - r0 * n, block.col + grid.shift_col - c0 * n
    shape = ((r1 - r0 + 1) * n, (c1 - c0 + 1) * n)

    def by_cell(values: np.ndarray) -> np.ndarray:
        """(cells_r, cells_c, n * n) of a block's values, NaN where no pixel of the map lies."""
        padded = np.full(shape, np.nan, np.float32)
        padded[pad_top : pad_top + block.height, pad_left : pad_left + block.width] = values
        cells = padded.reshape(shape[0] // n, n, shape[1] // n, n).transpose(0, 2, 1, 3)
        return cells.reshape(cells.shape[0], cells.shape[1], n * n)

    h, g = by_cell(heights), by_cell(gaps)
    inside = by_cell(np.ones(heights.shape, np.float32))
    valid = np.isfinite(h)
    count = valid.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell without valid pixels is NaN, as meant
        out = {
            "mean": np.nanmean(h, axis=2),
            "p95": np.nanpercentile(h, 95, axis=2),
            "max": np.nanmax(h, axis=2),
            "cover_2m": np.where(count > 0, (h > 2.0).sum(axis=2) / count, np.nan),
            "cover_5m": np.where(count > 0, (h > 5.0).sum(axis=2) / count, np.nan),
            "gap_fraction": np.nanmean(g, axis=2),
            "valid_fraction": count / n**2,
            "inside": np.nansum(inside, axis=2),
        }
    return {**{k: v.astype(np.float32) for k, v in out.items()}, "origin": np.array([r0, c0], np.int64)}


def aggregate(
    chm: str | os.PathLike | xr.DataArray,
    res: float,
    out: str | os.PathLike | None = None,
    *,
    trees: str | os.PathLike | gpd.GeoDataFrame | None = None,
    min_valid_fraction: float = 0.5,
    shared: float = 1.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    client=None,
    cluster: ClusterSpec | None = None,
    resume: bool = False,
) -> xr.Dataset:
    """Per-cell statistics of a canopy height map (and of its trees) on cells of ``res`` metres (module docstring).

    Parameters
    ----------
    chm
        A canopy height map (GeoTIFF or DataArray) in a projected CRS in metres.
    res
        Cell side in metres, a whole multiple of the map's pixel size; cells are aligned to whole multiples of it.
    out
        Also write the grid as one multi-band COG (each band named in its description and tags), with a QGIS style
        for its first band (``<name>.qml``) and one per band (``<name>.<band>.qml``).
    trees
        Trees from ``canopy trees`` (a GeoPackage or its ``tops`` table), with ``--allometry`` for the biomass bands.
    min_valid_fraction
        Cells with less of their pixels valid are NaN.
    shared
        The share of trees' biomass errors common to all trees of a cell (:func:`canopy.analysis.allometry.total`).
    block_size
        Map pixels a side read at a time, rounded down to whole cells (at least one).
    client, cluster
        A Dask client, or a cluster to start or connect to; neither for threads here.
    resume
        Reuse the blocks a killed run with the same map and settings kept beside ``out``.

    Returns
    -------
    xarray.Dataset
        One variable per band (y, x), float32, with the cells' CRS and transform (``.rio``); attributes name the
        cell size and the rules.

    Raises
    ------
    AggregateError
        If ``res`` is not a whole multiple of the map's pixel, or ``min_valid_fraction`` is not in (0, 1].
    HeightMapError
        If the map is not a single-band map in metres with a no-data value.
    OutputPathError
        If ``out`` does not end in ``.tif`` or its folder does not exist.

    .. versionadded:: 0.3.0
    """
    if not 0 < min_valid_fraction <= 1:
        raise AggregateError(f"--min-valid-fraction {min_valid_fraction:g} must be above 0 and at most 1.")
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".tif" or not out.parent.is_dir():
            raise OutputPathError(f"Output {out} must be a .tif in an existing folder.")
    raster = open_height_raster(chm, max_res=None)
    grid = cell_grid(raster, float(res))
    cells = max(1, block_size // grid.n)
    blocks = grid.blocks(cells, raster.height, raster.width)
    fingerprint = {"analysis": "aggregate", "map": raster.fingerprint, "res": float(res), "cells_per_block": cells}
    bands = {name: np.full((grid.rows, grid.cols), np.nan, np.float32) for name in (*MAP_BANDS, "inside")}
    with block_run(out, fingerprint, resume=resume, client=client, cluster=cluster) as run:
        run.stage("cells", partial(_cells_kernel, run.shareable(raster), grid), blocks)
        for block in blocks:
            stored = run.store.load_all("cells", block)
            r0, c0 = (int(v) for v in stored["origin"])
            for name, grid_band in bands.items():
                part = stored[name]
                grid_band[r0 : r0 + part.shape[0], c0 : c0 + part.shape[1]] = part
        coverage = bands.pop("inside")
        valid_ha = bands["valid_fraction"] * grid.res**2 / 1e4
        if trees is not None:
            bands.update(_tree_bands(trees, grid, raster, valid_ha, shared))
        keep = (bands["valid_fraction"] >= min_valid_fraction) & (coverage > 0)
        for band in bands.values():
            band[~keep] = np.nan
        dataset = _dataset(bands, grid, raster.crs, min_valid_fraction)
        if out is not None:
            _write(dataset, out)
    return dataset


def _tree_bands(trees, grid: CellGrid, raster: HeightRaster, valid_ha: np.ndarray, shared: float) -> dict[str, np.ndarray]:
    """The tree bands (:data:`TREE_BANDS`) from the trees' tops, each counted in the cell holding its top."""
    tops = trees if isinstance(trees, gpd.GeoDataFrame) else gpd.read_file(trees, layer="tops")
    tops = tops.to_crs(raster.crs) if tops.crs is not None and tops.crs != raster.crs else tops
    rows = np.floor((grid.top - tops.geometry.y.to_numpy()) / grid.res).astype(np.int64)
    cols = np.floor((tops.geometry.x.to_numpy() - grid.left) / grid.res).astype(np.int64)
    inside = (rows >= 0) & (rows < grid.rows) & (cols >= 0) & (cols < grid.cols)
    tops, rows, cols = tops[inside], rows[inside], cols[inside]
    shape = (grid.rows, grid.cols)
    out = {name: np.full(shape, np.nan, np.float32) for name in TREE_BANDS}
    has_biomass = "agb_kg" in tops.columns
    with np.errstate(invalid="ignore", divide="ignore"):
        count = np.zeros(shape)
        np.add.at(count, (rows, cols), 1)
        out["trees_per_ha"] = (count / valid_ha).astype(np.float32)
    cell = rows * grid.cols + cols
    order = np.lexsort((-tops["height"].to_numpy(), cell))
    heights = tops["height"].to_numpy()[order]
    values = {k: tops[f"{k}_kg"].to_numpy()[order] for k in ("agb", "agb_sd", "carbon", "carbon_sd")} if has_biomass else {}
    starts = np.flatnonzero(np.r_[True, np.diff(cell[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        r, c = divmod(int(cell[order][start]), grid.cols)
        area = valid_ha[r, c]
        if not area > 0:
            continue
        tallest = max(1, int(round(TOPS_PER_HA * area)))
        out["top_height"][r, c] = heights[start:start + tallest].mean()
        for kind in ("agb", "carbon") if has_biomass else ():
            mean, sd, _, _ = total(values[kind][start:end], values[f"{kind}_sd"][start:end], shared)
            out[kind][r, c] = mean / 1000 / area
            out[f"{kind}_sd"][r, c] = sd / 1000 / area
    if has_biomass:
        empty = (count == 0) & (valid_ha > 0)  # a cell without trees holds no tree biomass
        for kind in ("agb", "agb_sd", "carbon", "carbon_sd"):
            out[kind][empty] = 0.0
    else:
        for kind in ("agb", "agb_sd", "carbon", "carbon_sd"):
            del out[kind]
    return out


def _dataset(bands: dict[str, np.ndarray], grid: CellGrid, crs, min_valid_fraction: float) -> xr.Dataset:
    """The bands as a Dataset on the cells' grid."""
    import rioxarray  # noqa: F401  (the .rio accessor)

    x = grid.left + (np.arange(grid.cols) + 0.5) * grid.res
    y = grid.top - (np.arange(grid.rows) + 0.5) * grid.res
    described = {**MAP_BANDS, **TREE_BANDS}
    variables = {name: xr.DataArray(values, dims=("y", "x"), coords={"y": y, "x": x},
                                    attrs={"long_name": described[name][0], "units": described[name][1]})
                 for name, values in bands.items()}
    dataset = xr.Dataset(variables, attrs={"canopy_cell_m": grid.res, "canopy_min_valid_fraction": min_valid_fraction,
                                           "canopy_cell_rule": "pixels whose centres fall in the cell"})
    return dataset.rio.write_crs(crs).rio.write_transform(grid.transform)


def _write(dataset: xr.Dataset, out: Path) -> None:
    """The grid as one multi-band COG (atomically) with a style per band."""
    names = list(dataset.data_vars)
    first = dataset[names[0]]
    profile = {"driver": "COG", "width": first.shape[1], "height": first.shape[0], "count": len(names), "dtype": "float32",
               "nodata": np.nan, "crs": dataset.rio.crs, "transform": dataset.rio.transform(), "compress": "deflate",
               "predictor": 3}
    with atomic_path(out) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for k, name in enumerate(names, start=1):
                variable = dataset[name]
                dst.write(variable.to_numpy().astype(np.float32), k)
                dst.set_band_description(k, name)
                dst.update_tags(k, name=name, long_name=variable.attrs["long_name"], units=variable.attrs["units"])
            dst.update_tags(**{k: str(v) for k, v in dataset.attrs.items()}, canopy_bands=",".join(names))
    for k, name in enumerate(names, start=1):
        values = dataset[name].to_numpy()
        finite = values[np.isfinite(values)]
        top = float(np.percentile(finite, 98)) if finite.size else 1.0
        unit = dataset[name].attrs["units"]
        vmax = style_range(top) if unit == "m" else (1.0 if unit == "fraction" else max(top, 1e-6))
        style = band_qml(vmax, unit, k)
        for path in ([out.with_suffix(".qml")] if k == 1 else []) + [out.with_name(f"{out.stem}.{name}.qml")]:
            with atomic_path(path) as tmp:
                tmp.write_text(style)
