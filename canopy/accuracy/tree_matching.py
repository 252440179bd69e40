"""Detected crowns scored against reference trees the way the NeonTreeEvaluation benchmark scores them.

Per plot, the bounding boxes of the detected crowns and of the reference trees (boxes or crown
polygons) are matched one to one by the Hungarian assignment on their intersection over union; a
pair counts when its IoU exceeds 0.4. Precision is matched over detected, recall matched over
reference, per plot; the benchmark reports their means over plots (Weinstein et al. 2021).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.optimize import linear_sum_assignment

from canopy.analysis.polygons import read_polygons
from canopy.errors import EvaluationError
from canopy.io.atomic import atomic_path

IOU_THRESHOLD = 0.4


@dataclass(frozen=True)
class PlotScore:
    """One plot: trees detected and in the reference, pairs matched, precision, recall and the matches' mean IoU."""

    plot: str
    detected: int
    reference: int
    matched: int
    precision: float
    recall: float
    mean_iou: float


@dataclass(frozen=True)
class TreeScores:
    """Per-plot scores and their means over plots (the benchmark's figures)."""

    plots: tuple[PlotScore, ...]
    iou_threshold: float

    @property
    def precision(self) -> float:
        """Mean precision over plots."""
        return float(np.mean([p.precision for p in self.plots]))

    @property
    def recall(self) -> float:
        """Mean recall over plots."""
        return float(np.mean([p.recall for p in self.plots]))

    def table(self) -> pd.DataFrame:
        """One row per plot, then a row ``mean`` with the means of precision and recall."""
        rows = [asdict(p) for p in self.plots]
        mean = {"plot": "mean", "detected": sum(p.detected for p in self.plots), "reference": sum(p.reference for p in self.plots),
                "matched": sum(p.matched for p in self.plots), "precision": self.precision, "recall": self.recall,
                "mean_iou": float(np.nanmean([p.mean_iou for p in self.plots])) if any(p.matched for p in self.plots) else np.nan}
        return pd.DataFrame([*rows, mean])

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write :meth:`table` as CSV, atomically.

        .. versionadded:: 0.3.0
        """
        with atomic_path(Path(path)) as tmp:
            self.table().to_csv(tmp, index=False)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), boxes as (minx, miny, maxx, maxy)."""
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(detected: np.ndarray, reference: np.ndarray, threshold: float = IOU_THRESHOLD) -> list[tuple[int, int, float]]:
    """Pairs (detected index, reference index, IoU) of the one-to-one assignment maximising total IoU, kept above ``threshold``."""
    if len(detected) == 0 or len(reference) == 0:
        return []
    iou = box_iou(detected, reference)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols) if iou[i, j] > threshold]


def evaluate_trees(
    crowns: str | os.PathLike | gpd.GeoDataFrame,
    reference: str | os.PathLike | gpd.GeoDataFrame | Sequence[str | os.PathLike],
    plots: str | os.PathLike | gpd.GeoDataFrame | None = None,
    plot_column: str = "plot",
    iou_threshold: float = IOU_THRESHOLD,
) -> TreeScores:
    """Score detected crowns against reference trees, plot by plot.

    Parameters
    ----------
    crowns
        Detected crowns: :attr:`TreeLayers.crowns <canopy.analysis.trees.TreeLayers>`, or a vector
        file (the ``crowns`` layer of a GeoPackage from ``canopy trees``).
    reference
        Reference trees as boxes or crown polygons: a GeoDataFrame, a vector file, or several files.
        Their ``plot_column`` names the plot of each tree; without it, each file is one plot named
        after the file.
    plots
        Polygons of the plots' extents, with the same ``plot_column``; None takes each plot's
        extent as the bounding box of its reference trees. A detected crown counts in a plot when
        its centre lies inside, and its box is clipped to the plot, as the benchmark clips it to
        the plot's image.
    plot_column
        The column naming plots.
    iou_threshold
        The IoU a pair must exceed to count (0.4 in the benchmark).

    Returns
    -------
    TreeScores

    Raises
    ------
    EvaluationError
        If a file cannot be read, a layer has no CRS, or a plot has no reference tree.

    .. versionadded:: 0.3
    """
    detected = _read_crowns(crowns)
    truth = _read_reference(reference, plot_column)
    detected = detected.to_crs(truth.crs)
    if plots is None:
        extents = {name: shapely.box(*group.total_bounds) for name, group in truth.groupby(plot_column, sort=True)}
    else:
        table = read_polygons(plots, None).to_crs(truth.crs)
        if plot_column not in table:
            raise EvaluationError(f"The plots have no column {plot_column!r} naming them; add it or pass --plot-column.")
        extents = {str(name): shapely.unary_union(group.geometry.values) for name, group in table.groupby(plot_column, sort=True)}
    scores = []
    centres = detected.geometry.representative_point().values
    for name, extent in extents.items():
        mine = truth[truth[plot_column] == name]
        if mine.empty:
            raise EvaluationError(f"Plot {name} has no reference tree; give its trees or leave it out of the plots.")
        inside = detected.geometry.values[shapely.contains(extent, centres)]
        boxes = _clipped_boxes(inside, extent)
        pairs = match_boxes(boxes, shapely.bounds(mine.geometry.values), iou_threshold)
        n_det, n_ref = len(boxes), len(mine)
        scores.append(PlotScore(name, n_det, n_ref, len(pairs), len(pairs) / n_det if n_det else 0.0, len(pairs) / n_ref,
                                float(np.mean([p[2] for p in pairs])) if pairs else float("nan")))
    return TreeScores(tuple(scores), iou_threshold)


def _clipped_boxes(geometries: np.ndarray, extent: shapely.Geometry) -> np.ndarray:
    """Bounding boxes (N, 4) of geometries cut to a plot's extent."""
    if len(geometries) == 0:
        return np.zeros((0, 4))
    return shapely.bounds(shapely.intersection(geometries, shapely.envelope(extent)))


def _read_crowns(crowns) -> gpd.GeoDataFrame:
    """Detected crowns from a GeoDataFrame or a vector file (its ``crowns`` layer when it has one)."""
    if isinstance(crowns, gpd.GeoDataFrame):
        return read_polygons(crowns, None)
    import pyogrio

    try:
        layers = [name for name, _ in pyogrio.list_layers(crowns)]
    except Exception as exc:  # pyogrio raises its own kinds for unreadable files
        raise EvaluationError(f"Trees {crowns} cannot be read ({exc}); pass the GeoPackage from `canopy trees`.") from None
    return read_polygons(crowns, "crowns" if "crowns" in layers else None)


def _read_reference(reference, plot_column: str) -> gpd.GeoDataFrame:
    """Reference trees with a plot name each: the column's, or the file's name."""
    if isinstance(reference, (str, os.PathLike, gpd.GeoDataFrame)):
        reference = [reference]
    tables = []
    for item in reference:
        table = read_polygons(item, None)
        if plot_column not in table:
            if isinstance(item, gpd.GeoDataFrame):
                raise EvaluationError(f"The reference trees have no column {plot_column!r} naming their plot; add it.")
            table = table.assign(**{plot_column: os.path.splitext(os.path.basename(item))[0]})
        tables.append(table.to_crs(tables[0].crs if tables else table.crs))
    truth = gpd.GeoDataFrame(pd.concat(tables, ignore_index=True), crs=tables[0].crs)
    truth[plot_column] = truth[plot_column].astype(str)
    return truth
