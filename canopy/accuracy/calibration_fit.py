"""Calibration of a model's heights on the user's lidar: a monotone mapping fitted on their plots, proven on held-out ones.

**The fit is isotonic regression** of lidar height on predicted height: the non-decreasing function
that minimises the squared error of the pairs. It estimates the mean lidar height for each
predicted height, so it lowers the per-pixel errors (MAE, RMSE, bias) that ``canopy evaluate``
reports, whatever shape the model's distortion has, and it cannot reorder heights. Quantile mapping
was the other candidate: it makes the distribution of heights match the lidar's, which is right for
a histogram but not for a pixel's error; where the model is noisy it spreads heights out and raises
the per-pixel error. Pairs are binned by predicted height into up to 200 quantile bins first, and
pooled-adjacent-violators runs on the bins, so the mapping has at most 200 breakpoints and the file
stays small and readable. Between breakpoints heights are interpolated; outside the fitted range
they are shifted by the correction at its nearest end, and no height goes below 0.

**Pairs** are taken on the reference's grid with :func:`canopy.evaluate`'s rules
(:func:`canopy.accuracy.evaluation.paired_bands`). **Proof** is by cross-validation that never splits a
plot: leave one reference (plot) out when there are several, otherwise four spatial quarters of the
one reference; the metrics before and after are :func:`canopy.evaluate`'s, pooled over the held-out parts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio

from canopy.accuracy.evaluation import array_metrics, paired_bands
from canopy.calibration import Calibration, CalibrationError, map_identity
from canopy.io.atomic import atomic_path
from canopy.io.output_lock import output_lock

MIN_PAIRS = 1000
"""Fewer valid (prediction, lidar) pixels than this cannot calibrate."""
MIN_SPAN_M = 5.0
"""Reference heights must span at least this (2nd to 98th percentile) for a mapping to mean anything."""
BINS = 200
METRICS = ("mae", "rmse", "bias", "r2")


def fit_monotone(predicted: np.ndarray, reference: np.ndarray, bins: int = BINS) -> tuple[tuple[float, float], ...]:
    """Breakpoints of the isotonic regression of ``reference`` on ``predicted``, over quantile bins of ``predicted``."""
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    count = np.bincount(index, minlength=len(edges))
    used = count > 0
    mean_x = (np.bincount(index, weights=predicted, minlength=len(edges))[used] / count[used])
    mean_y = (np.bincount(index, weights=reference, minlength=len(edges))[used] / count[used])
    blocks: list[list[float]] = []  # [sum w*x, sum w*y, sum w], pooled while they violate order
    for x, y, w in zip(mean_x, mean_y, count[used].astype(np.float64)):
        blocks.append([x * w, y * w, w])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    return tuple((float(sx / w), float(sy / w)) for sx, sy, w in blocks)


def calibrate(
    maps: str | os.PathLike | Sequence[str | os.PathLike],
    references: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    plot: str | os.PathLike | None = None,
) -> Calibration:
    """Fit a monotone mapping from a model's heights to lidar heights on the user's plots, and prove it on held-out ones.

    Parameters
    ----------
    maps
        One height map covering every reference, or one map per reference (the same model's).
    references
        Lidar canopy height models (plots); pairs are taken on their grids as ``canopy evaluate`` takes them.
    out
        Write the calibration here (JSON).
    plot
        Also write a PNG of the mapping over the pairs' density.

    Returns
    -------
    Calibration
        With ``validation``: the scheme, the folds, and MAE, RMSE, bias and R² of the held-out
        parts before and after.

    Raises
    ------
    CalibrationError
        If the maps were made by different models, there are fewer than :data:`MIN_PAIRS` valid
        pairs, or the reference heights span less than :data:`MIN_SPAN_M`.
    EvaluationError, ImageryReadError
        As :func:`canopy.evaluate`, for a map and reference that do not overlap or cannot be read.

    .. versionadded:: 0.3
    """
    references = [str(r) for r in references]
    maps = [str(maps)] * len(references) if isinstance(maps, (str, os.PathLike)) else [str(m) for m in maps]
    if len(maps) != len(references) or not references:
        raise CalibrationError(f"Give one map, or one map per reference: {len(maps)} maps for {len(references)} references.")
    identities = set()
    for path in dict.fromkeys(maps):
        with rasterio.open(path) as src:
            identities.add(map_identity(src.tags()))
    if len(identities) > 1:
        raise CalibrationError(f"The maps were made by different models or weights ({sorted(identities)}); calibrate one model at a time.")
    grids = [_pairs_on_grid(m, r) for m, r in zip(maps, references)]
    predicted, reference = _valid(grids)
    _check_pairs(predicted, reference, ", ".join(references))
    validation = _cross_validate(grids)
    breakpoints = tuple((round(x, 4), round(y, 4)) for x, y in fit_monotone(predicted, reference))  # as the file keeps them
    calibration = Calibration(*identities.pop(), breakpoints, int(predicted.size),
                              (float(predicted.min()), float(predicted.max())),
                              datetime.now(timezone.utc).isoformat(timespec="seconds"), tuple(Path(r).name for r in references),
                              validation)
    written = [Path(path) for path in (out, plot) if path is not None]
    if written:
        with output_lock(written[0], written[1:]):
            if out is not None:
                calibration.write(out)
            if plot is not None:
                _plot(calibration, predicted, reference, Path(plot))
    return calibration


def _pairs_on_grid(prediction: str, reference: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole (prediction, reference) pair of arrays on the reference's grid."""
    bands = list(paired_bands(prediction, reference))
    return np.concatenate([p for p, _ in bands]), np.concatenate([r for _, r in bands])


def _valid(grids) -> tuple[np.ndarray, np.ndarray]:
    """The pairs valid in both, as two flat float64 arrays."""
    valid = [np.isfinite(p) & np.isfinite(r) for p, r in grids]
    predicted = np.concatenate([p[ok] for (p, _), ok in zip(grids, valid)]).astype(np.float64)
    reference = np.concatenate([r[ok] for (_, r), ok in zip(grids, valid)]).astype(np.float64)
    return predicted, reference


def _check_pairs(predicted: np.ndarray, reference: np.ndarray, where: str) -> None:
    """Refuse too few pairs, or references too flat to fit above."""
    if predicted.size < MIN_PAIRS:
        raise CalibrationError(f"Only {predicted.size} pixels of {where} have both a prediction and a reference height; "
                               f"calibrating needs at least {MIN_PAIRS}: add plots or larger ones.")
    low, high = np.percentile(reference, [2, 98])
    if high - low < MIN_SPAN_M:
        raise CalibrationError(f"The reference heights of {where} span only {low:.1f}-{high:.1f} m; calibrating needs at least "
                               f"{MIN_SPAN_M:g} m of range, with plots of short and tall canopy.")


def _folds(grids) -> tuple[str, list[list[tuple[np.ndarray, np.ndarray]]]]:
    """Held-out parts: each reference, or the four spatial quarters of a single one (NaN outside each)."""
    if len(grids) > 1:
        return "leave-one-plot-out", [[g] for g in grids]
    pred, ref = grids[0]
    rows, cols = ref.shape
    quarters = []
    for top, bottom in ((0, rows // 2), (rows // 2, rows)):
        for left, right in ((0, cols // 2), (cols // 2, cols)):
            part = np.full(ref.shape, False)
            part[top:bottom, left:right] = True
            quarters.append([(np.where(part, pred, np.nan), np.where(part, ref, np.nan))])
    return "spatial quarters", quarters


def _cross_validate(grids) -> dict:
    """Metrics of the held-out parts, before and after a calibration fitted on the rest, pooled over the folds."""
    scheme, folds = _folds(grids)
    before: list[tuple[np.ndarray, np.ndarray]] = []
    after: list[tuple[np.ndarray, np.ndarray]] = []
    used = 0
    for k, held in enumerate(folds):
        rest = [pair for j, fold in enumerate(folds) if j != k for pair in fold]
        x, y = _valid(rest)
        if x.size < MIN_PAIRS:
            continue
        fitted = Calibration("", "", "", fit_monotone(x, y), x.size, (0.0, 0.0), "")
        before += held
        after += [(fitted.apply(p), r) for p, r in held]
        used += 1
    if not used:
        return {"scheme": scheme, "folds": 0, "note": "no fold had enough pairs outside it to fit"}
    summary = {name: array_metrics(pairs) for name, pairs in (("before", before), ("after", after))}
    return {"scheme": scheme, "folds": used,
            **{name: {m: (None if metrics is None or getattr(metrics, m) is None else round(float(getattr(metrics, m)), 4)) for m in METRICS}
               for name, metrics in summary.items()}}


def _plot(calibration: Calibration, predicted: np.ndarray, reference: np.ndarray, png: Path) -> None:
    """The mapping over the pairs' density, with the 1:1 line and the held-out metrics."""
    from matplotlib.figure import (
        Figure,  # no pyplot: the caller's backend (a notebook's inline one) is left alone
    )

    top = float(max(np.percentile(predicted, 99.5), np.percentile(reference, 99.5), 5.0))
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    counts = ax.hexbin(predicted, reference, gridsize=60, extent=(0, top, 0, top), mincnt=1, bins="log", cmap="Greens")
    grid = np.linspace(0, top, 200)
    ax.plot(grid, grid, color="grey", linestyle="--", linewidth=1, label="1:1")
    ax.plot(grid, calibration.apply(grid), color="#b2182b", linewidth=2, label="calibration")
    ax.set_xlabel("predicted height (m)")
    ax.set_ylabel("reference (lidar) height (m)")
    v = calibration.validation
    if v.get("folds"):
        ax.set_title(f"held out ({v['scheme']}): MAE {v['before']['mae']:.2f} -> {v['after']['mae']:.2f} m", fontsize=10)
    ax.legend(loc="upper left")
    fig.colorbar(counts, ax=ax, label="pixels")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")

