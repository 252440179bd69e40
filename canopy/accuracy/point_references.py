"""References that are points: GEDI or ICESat-2 footprints, field plots with a measured top height.

A point stands for a disc of ``footprint_m`` diameter (25 m for GEDI). Its pair is its height
(e.g. RH98, in a column named by ``height_column``) and the map's statistic over the pixels whose
centres lie in the disc: ``p98`` for GEDI's RH98, ``max`` for a field plot's top height, ``mean`` or
any ``pNN``. A point whose disc is less than half covered by valid pixels is left out.

Why a percentile: a monotone calibration ``f`` commutes with percentiles, ``p98(f(h)) = f(p98(h))``,
so a mapping fitted between a footprint's ``p98`` of the map and its RH98 is the per-pixel mapping
itself (up to the footprint's own error); for ``mean`` that holds only approximately.

Footprints close to each other share their errors (the same stand, the same geolocation offset),
so cross-validation holds out **spatial groups**: footprints are grouped by cells of
:data:`GROUP_CELL_FOOTPRINTS` footprint diameters, and cells whose footprints overlap (centres
closer than one diameter) are merged, so no two folds share a footprint's neighbourhood.

GEDI L2A granules (HDF5) are read by no well-kept Python reader that canopy could depend on; export
the shots first (``docs/uncertainty.md`` shows how: beams' ``lat_lowestmode``, ``lon_lowestmode``,
``rh`` [98], filtered on ``quality_flag == 1``, ``degrade_flag == 0`` and ``sensitivity``), into any
vector file of points with a height column.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window

from canopy.errors import EvaluationError

MIN_POINTS = 30
"""Fewer valid points than this cannot calibrate."""
GROUP_CELL_FOOTPRINTS = 10
"""Footprints are grouped by square cells of this many footprint diameters for cross-validation."""
FOLDS = 5
_STATISTIC = re.compile(r"^(max|mean|p(\d{1,2}(\.\d+)?|100))$")


@dataclass(frozen=True)
class PointReference:
    """How reference points are read: the column of their height (m), the diameter (m) of the footprint each stands
    for, and the map's statistic over it (``max``, ``mean`` or ``pNN``, e.g. ``p98`` for GEDI RH98).

    Raises
    ------
    EvaluationError
        If the footprint is not positive or the statistic is not one of those.

    .. versionadded:: 0.3.0
    """

    height_column: str
    footprint_m: float = 25.0
    statistic: str = "p98"

    def __post_init__(self) -> None:
        if not self.footprint_m > 0:
            raise EvaluationError(f"--footprint-m {self.footprint_m} must be a positive diameter in metres, e.g. 25 for GEDI.")
        if not _STATISTIC.match(self.statistic):
            raise EvaluationError(f"--statistic {self.statistic!r} must be max, mean or a percentile such as p98.")

    def describe(self) -> str:
        """``p98 of the map over 25 m footprints against column rh98``."""
        return f"{self.statistic} of the map over {self.footprint_m:g} m footprints against column {self.height_column}"

    def of(self, values: np.ndarray) -> float:
        """The statistic of a footprint's valid heights."""
        if self.statistic == "max":
            return float(values.max())
        if self.statistic == "mean":
            return float(values.mean())
        return float(np.percentile(values, float(self.statistic[1:])))


@dataclass(frozen=True)
class PointPairs:
    """Valid points: the map's statistic over each footprint, the point's height, and its (x, y) in the map's CRS."""

    statistic: np.ndarray
    height: np.ndarray
    xy: np.ndarray


def footprint_pairs(map_path: str | os.PathLike, points_path: str | os.PathLike, points: PointReference) -> PointPairs:
    """Pair each reference point with the map's statistic over its footprint.

    Parameters
    ----------
    map_path
        A height map (one band, a projected CRS in metres).
    points_path
        A vector file of points (GeoPackage, GeoJSON, shapefile, ...) with a CRS and the height column.
    points
        How to read them.

    Returns
    -------
    PointPairs
        The points whose footprint is at least half covered by valid map pixels.

    Raises
    ------
    EvaluationError
        If the file holds no points, has no CRS, lacks the column, or the map is not in metres.
    """
    import geopandas

    try:
        frame = geopandas.read_file(points_path)
    except Exception as exc:  # pyogrio raises its own kinds for a file that is not vector data
        raise EvaluationError(f"Reference points {points_path} cannot be read as a vector file ({exc}); pass a GeoPackage "
                              "or GeoJSON of points.") from None
    if points.height_column not in frame.columns:
        raise EvaluationError(f"Reference points {points_path} have no column {points.height_column!r} (they have "
                              f"{', '.join(c for c in frame.columns if c != 'geometry')}); pass the height's with --height-column.")
    if frame.crs is None:
        raise EvaluationError(f"Reference points {points_path} have no CRS; assign one before using them.")
    if len(frame) and not (frame.geometry.geom_type == "Point").all():
        raise EvaluationError(f"Reference points {points_path} hold geometries other than points; pass one point per footprint.")
    with rasterio.open(map_path) as src:
        if src.crs is None or not src.crs.is_projected:
            raise EvaluationError(f"Map {map_path} is not in a projected CRS in metres; footprints need one.")
        frame = frame.to_crs(src.crs)
        heights = frame[points.height_column].to_numpy(np.float64)
        x, y = frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
        stats = np.array([_footprint_statistic(src, px, py, points) for px, py in zip(x, y)], np.float64)
    valid = np.isfinite(stats) & np.isfinite(heights)
    return PointPairs(stats[valid], heights[valid], np.column_stack([x, y])[valid])


def _footprint_statistic(src: rasterio.DatasetReader, x: float, y: float, points: PointReference) -> float:
    """The statistic of the map's valid pixels whose centres lie within the footprint around (x, y); NaN when under half
    of the disc's pixels are valid."""
    radius = points.footprint_m / 2
    res = abs(src.transform.a)
    col, row = ~src.transform * (x, y)
    reach = math.ceil(radius / res) + 1
    window = Window(math.floor(col) - reach, math.floor(row) - reach, 2 * reach + 1, 2 * reach + 1)
    data = src.read(1, window=window, boundless=True, fill_value=np.nan if src.nodata is None else src.nodata,
                    masked=True).astype(np.float64).filled(np.nan)
    rows, cols = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
    cx, cy = src.transform * (window.col_off + cols + 0.5, window.row_off + rows + 0.5)
    inside = (cx - x) ** 2 + (cy - y) ** 2 <= radius**2
    values = data[inside]
    values = values[np.isfinite(values)]
    if values.size * 2 < inside.sum() or not values.size:
        return float("nan")
    return points.of(values)


def spatial_folds(xy: np.ndarray, footprint_m: float, folds: int = FOLDS) -> np.ndarray:
    """A fold number for each point, such that no two folds share a footprint's neighbourhood (module docstring);
    groups are dealt to folds largest first, each to the smallest fold so far.

    Raises
    ------
    EvaluationError
        If the points lie in fewer than two groups: nothing could be held out.
    """
    from scipy.cluster.hierarchy import DisjointSet
    from scipy.spatial import cKDTree

    cell = GROUP_CELL_FOOTPRINTS * footprint_m
    cells = [tuple(c) for c in np.floor(xy / cell).astype(np.int64)]
    groups = DisjointSet(range(len(xy)))
    first: dict[tuple, int] = {}
    for i, c in enumerate(cells):
        groups.merge(first.setdefault(c, i), i)
    for i, j in cKDTree(xy).query_pairs(footprint_m):
        groups.merge(i, j)
    roots = [groups[i] for i in range(len(xy))]
    members: dict[int, list[int]] = {}
    for i, root in enumerate(roots):
        members.setdefault(root, []).append(i)
    if len(members) < 2:
        raise EvaluationError("The reference points all lie in one neighbourhood of footprints, so none can be held out to "
                              "check the calibration; add points from elsewhere.")
    count = min(folds, len(members))
    sizes = [0] * count
    fold = np.empty(len(xy), np.int64)
    for group in sorted(members.values(), key=len, reverse=True):
        k = int(np.argmin(sizes))
        fold[group] = k
        sizes[k] += len(group)
    return fold
