"""``canopy evaluate-change``: height loss between two maps scored against the loss between two lidar CHMs of the same
dates, as the Open-Canopy-Δ benchmark scores it (Fogel et al. 2025, "Open-Canopy"): at each height threshold × minimum
area, the pixels whose height fell by more than the threshold, in connected patches (8-neighbour) of at least the area,
compared pixel by pixel: precision, recall, F1 and IoU; plus the pixel-level error of the difference itself.

All four rasters are read on the first lidar CHM's grid (a map finer than it averaged, coarser interpolated, as
``canopy evaluate`` does); pixels without data in any of them are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from canopy.analysis.height_raster import open_height_raster
from canopy.blockwise.parts import large_patches
from canopy.errors import EvaluationError
from canopy.io.atomic import atomic_path

THRESHOLDS_M = (5.0, 10.0, 15.0, 20.0)
MIN_AREAS_M2 = (10.0, 25.0, 100.0, 200.0, 300.0, 400.0)


@dataclass(frozen=True)
class ChangeScores:
    """The loss scores by threshold × minimum area (``table``: columns ``threshold_m``, ``min_area_m2``,
    ``precision``, ``recall``, ``f1``, ``iou``, ``predicted_m2``, ``reference_m2``), and the difference's pixel error
    against the lidar difference (``mae``, ``rmse``, ``bias`` in m, over ``n`` pixels).

    .. versionadded:: 0.3.0
    """

    table: pd.DataFrame
    mae: float
    rmse: float
    bias: float
    n: int

    def write_csv(self, path: str | os.PathLike) -> None:
        """The table as CSV, atomically."""
        with atomic_path(Path(path)) as tmp:
            self.table.to_csv(tmp, index=False)

    def plot(self, png: str | os.PathLike) -> None:
        """F1 by threshold × minimum area as a heat map, atomically."""
        from matplotlib.figure import Figure

        grid = self.table.pivot(index="threshold_m", columns="min_area_m2", values="f1")
        fig = Figure(figsize=(6.5, 3.6))
        ax = fig.subplots()
        image = ax.imshow(grid.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [f"{a:g}" for a in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{t:g}" for t in grid.index])
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            ax.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if not np.isnan(value) and value < 0.6 else "black")
        ax.set_xlabel("minimum area (m²)")
        ax.set_ylabel("height loss threshold (m)")
        ax.set_title(f"loss F1 against lidar (difference MAE {self.mae:.2f} m)", fontsize=10)
        fig.colorbar(image, ax=ax, label="F1")
        fig.tight_layout()
        with atomic_path(Path(png)) as tmp:
            fig.savefig(tmp, format="png")


def loss_mask(difference: np.ndarray, threshold: float, min_area: float, pixel_area: float) -> np.ndarray:
    """Pixels whose height fell by more than ``threshold``, in 8-connected patches of at least ``min_area``."""
    return large_patches(np.nan_to_num(difference, nan=0.0) < -threshold, min_area, pixel_area)


def evaluate_change(before: str | os.PathLike, after: str | os.PathLike, lidar_before: str | os.PathLike,
                    lidar_after: str | os.PathLike, *, thresholds: tuple[float, ...] = THRESHOLDS_M,
                    min_areas_m2: tuple[float, ...] = MIN_AREAS_M2) -> ChangeScores:
    """Score the height loss between two maps against the loss between two lidar CHMs (module docstring).

    Parameters
    ----------
    before, after
        The two maps (e.g. ``canopy predict`` at two dates).
    lidar_before, lidar_after
        Lidar canopy height models of the same dates; the first one's grid is the one compared on.
    thresholds
        Height losses (m) a pixel must exceed.
    min_areas_m2
        Smallest patch of loss counted (m²).

    Returns
    -------
    ChangeScores

    Raises
    ------
    EvaluationError
        If no pixel has data in all four, or a threshold or area is negative.
    HeightMapError
        If a raster is not a single-band height map in metres.

    .. versionadded:: 0.3.0
    """
    if any(t < 0 for t in thresholds) or any(a < 0 for a in min_areas_m2):
        raise EvaluationError("Thresholds and minimum areas must be at least 0.")
    reference = open_height_raster(lidar_before, max_res=None)
    grid = reference.grid
    layers = [open_height_raster(p, max_res=None) for p in (before, after, lidar_after)]
    values = [reference.read(0, 0, grid.height, grid.width)]
    values += [r.on(grid).read(0, 0, grid.height, grid.width) for r in layers]
    b, a, lb, la = values[1], values[2], values[0], values[3]
    valid = np.isfinite(a) & np.isfinite(b) & np.isfinite(la) & np.isfinite(lb)
    if not valid.any():
        raise EvaluationError(f"No pixel has a height in all of {before}, {after}, {lidar_before} and {lidar_after}; check "
                              "that they cover the same place.")
    predicted = np.where(valid, a - b, np.nan)
    truth = np.where(valid, la - lb, np.nan)
    error = (predicted - truth)[valid]
    rows = []
    pixel_m2 = grid.res**2
    for threshold in thresholds:
        for area in min_areas_m2:
            found = loss_mask(predicted, threshold, area, pixel_m2) & valid
            real = loss_mask(truth, threshold, area, pixel_m2) & valid
            tp, fp, fn = int((found & real).sum()), int((found & ~real).sum()), int((~found & real).sum())
            precision = tp / (tp + fp) if tp + fp else np.nan
            recall = tp / (tp + fn) if tp + fn else np.nan
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
            iou = tp / (tp + fp + fn) if tp + fp + fn else np.nan
            rows.append({"threshold_m": threshold, "min_area_m2": area, "precision": precision, "recall": recall, "f1": f1,
                         "iou": iou, "predicted_m2": (tp + fp) * pixel_m2, "reference_m2": (tp + fn) * pixel_m2})
    return ChangeScores(pd.DataFrame(rows), float(np.abs(error).mean()), float(np.sqrt((error**2).mean())),
                        float(error.mean()), int(valid.sum()))
