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
(:func:`canopy.accuracy.evaluation.paired_layers`), or for point references (GEDI footprints, field
plots) between each point's height and the map's statistic over its footprint
(:mod:`canopy.accuracy.point_references`). **Proof** is by cross-validation that never splits a
plot: leave one reference (plot) out when there are several, otherwise four spatial quarters of the
one reference, and for points spatial groups of footprints; the metrics before and after are
:func:`canopy.evaluate`'s, pooled over the held-out parts.

**The prediction interval** (:mod:`canopy.accuracy.interval_fit`) is fitted on each plot's heights
calibrated without that plot, and validated on plots held out of both the mapping and the interval.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio

from canopy.accuracy.evaluation import array_metrics, coverage, paired_layers
from canopy.accuracy.interval_fit import LEVEL, fit_interval
from canopy.accuracy.point_references import MIN_POINTS, PointReference, footprint_pairs, spatial_folds
from canopy.calibration import UNNAMED_UNCERTAINTY, Calibration, CalibrationError, map_identity
from canopy.errors import EvaluationError
from canopy.io.atomic import atomic_path
from canopy.io.companions import UNCERTAINTY, companion
from canopy.io.output_lock import output_lock

log = logging.getLogger(__name__)

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
    level: float = LEVEL,
    points: PointReference | None = None,
) -> Calibration:
    """Fit a monotone mapping from a model's heights to lidar heights on the user's plots, and the prediction interval
    around it, and prove both on held-out plots.

    Parameters
    ----------
    maps
        One height map covering every reference, or one map per reference (the same model's). A map
        with ``<name>.uncertainty.tif`` beside it (``canopy predict --uncertainty``) gets an interval
        that scales with it.
    references
        Lidar canopy height models (plots); pairs are taken on their grids as ``canopy evaluate`` takes them.
        With ``points``, vector files of reference points instead.
    out
        Write the calibration here (JSON).
    plot
        Also write a PNG of the mapping over the pairs' density.
    level
        The prediction interval's default level (its quantiles are also kept for :data:`LEVELS`).
    points
        How the references are points (:class:`~canopy.accuracy.point_references.PointReference`): their
        height column, footprint and the map's statistic over it. Points calibrate heights only: no
        interval (a footprint's error is not a pixel's).

    Returns
    -------
    Calibration
        With ``validation``: the scheme, the folds, and MAE, RMSE, bias and R² of the held-out
        parts before and after; and for an interval its coverage (PICP) and mean width (MPIW) on
        held-out parts, for one global interval (before) and the fitted one (after), by height bin.

    Raises
    ------
    CalibrationError
        If the maps were made by different models, there are fewer valid pairs than needed
        (:data:`MIN_PAIRS`; :data:`~canopy.accuracy.point_references.MIN_POINTS` for points), or the
        reference heights span less than :data:`MIN_SPAN_M`.
    EvaluationError, ImageryReadError
        As :func:`canopy.evaluate`, for a map and reference that do not overlap or cannot be read.

    .. versionadded:: 0.3
    .. versionchanged:: 0.3.0
       The prediction interval (``level``), and point references (``points``).
    """
    references = [str(r) for r in references]
    maps = [str(maps)] * len(references) if isinstance(maps, (str, os.PathLike)) else [str(m) for m in maps]
    if len(maps) != len(references) or not references:
        raise CalibrationError(f"Give one map, or one map per reference: {len(maps)} maps for {len(references)} references.")
    if not 0.0 < level < 1.0:
        raise CalibrationError(f"Interval level {level:g} must be between 0 and 1, e.g. 0.9.")
    identity, uncertainty = _identity_of(maps)
    if points is not None:
        predicted, reference, validation = _points_fit(maps, references, points)
        interval = spread = None
    else:
        grids = [_pairs_on_grid(m, r, bool(uncertainty)) for m, r in zip(maps, references)]
        predicted, reference, spread = _valid(grids)
        _check_pairs(predicted, reference, ", ".join(references))
        scheme, folds = _folds(grids)
        fitted = [_fitted_without(folds, k) for k in range(len(folds))]  # each fold's mapping, for the proof and the interval
        validation = _cross_validate(scheme, folds, fitted, level, uncertainty)
        held = _held_out_calibrated(folds, fitted)
        interval = None if held is None else fit_interval(*held, uncertainty, level)
    breakpoints = tuple((round(x, 4), round(y, 4)) for x, y in fit_monotone(predicted, reference))  # as the file keeps them
    calibration = Calibration(*identity, breakpoints, int(predicted.size),
                              (float(predicted.min()), float(predicted.max())),
                              datetime.now(timezone.utc).isoformat(timespec="seconds"), tuple(Path(r).name for r in references),
                              validation, interval)
    written = [Path(path) for path in (out, plot) if path is not None]
    if written:
        with output_lock(written[0], written[1:]):
            if out is not None:
                calibration.write(out)
            if plot is not None:
                _plot(calibration, predicted, reference, None if spread is None else float(np.median(spread)), Path(plot))
    return calibration


def _identity_of(maps: Sequence[str]) -> tuple[tuple[str, str, str], str]:
    """The one (model, weights, head weights) the maps share, and their ``canopy_uncertainty`` when every map has an
    uncertainty beside it (else empty: the interval does not scale)."""
    identities, uncertainties = set(), set()
    for path in dict.fromkeys(maps):
        with rasterio.open(path) as src:
            identities.add(map_identity(src.tags()))
            beside = companion(path, UNCERTAINTY).is_file()
            uncertainties.add(src.tags().get("canopy_uncertainty", UNNAMED_UNCERTAINTY) if beside else "")
    if len(identities) > 1:
        raise CalibrationError(f"The maps were made by different models or weights ({sorted(identities)}); calibrate one model at a time.")
    if len(uncertainties) > 1:
        log.warning("only some maps have an uncertainty beside them (or they differ): the interval does not scale with it")
    return identities.pop(), uncertainties.pop() if len(uncertainties) == 1 else ""


Grid = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]
"""A reference's (prediction, reference, uncertainty or None) on its grid, NaN for no data."""


def _pairs_on_grid(prediction: str, reference: str, spread: bool) -> Grid:
    """The whole (prediction, reference, uncertainty) arrays on the reference's grid."""
    layers = [prediction, str(companion(prediction, UNCERTAINTY))] if spread else [prediction]
    bands = list(paired_layers(layers, reference))
    stacked = [np.concatenate([band[0][k] for band in bands]) for k in range(len(layers))]
    return stacked[0], np.concatenate([ref for _, ref in bands]), stacked[1] if spread else None


def _valid(grids: Sequence[Grid]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The pairs valid in all, as flat float64 arrays (and their uncertainty, if they have one)."""
    if not grids:
        return np.empty(0), np.empty(0), None
    valid = [np.isfinite(p) & np.isfinite(r) & (np.isfinite(u) if u is not None else True) for p, r, u in grids]
    flat = [np.concatenate([g[k][ok] for g, ok in zip(grids, valid)]).astype(np.float64) if grids[0][k] is not None else None
            for k in range(3)]
    return flat[0], flat[1], flat[2]


def _check_pairs(predicted: np.ndarray, reference: np.ndarray, where: str, minimum: int = MIN_PAIRS, what: str = "pixels") -> None:
    """Refuse too few pairs, or references too flat to fit above."""
    if predicted.size < minimum:
        raise CalibrationError(f"Only {predicted.size} {what} of {where} have both a prediction and a reference height; "
                               f"calibrating needs at least {minimum}: add plots or larger ones.")
    low, high = np.percentile(reference, [2, 98])
    if high - low < MIN_SPAN_M:
        raise CalibrationError(f"The reference heights of {where} span only {low:.1f}-{high:.1f} m; calibrating needs at least "
                               f"{MIN_SPAN_M:g} m of range, with plots of short and tall canopy.")


def _folds(grids: Sequence[Grid]) -> tuple[str, list[list[Grid]]]:
    """Held-out parts: each reference, or the four spatial quarters of a single one (NaN outside each)."""
    if len(grids) > 1:
        return "leave-one-plot-out", [[g] for g in grids]
    pred, ref, spread = grids[0]
    rows, cols = ref.shape
    quarters = []
    for top, bottom in ((0, rows // 2), (rows // 2, rows)):
        for left, right in ((0, cols // 2), (cols // 2, cols)):
            part = np.full(ref.shape, False)
            part[top:bottom, left:right] = True
            quarters.append([(np.where(part, pred, np.nan), np.where(part, ref, np.nan), spread)])
    return "spatial quarters", quarters


def _fitted_without(folds: list[list[Grid]], k: int) -> Calibration | None:
    """The mapping fitted on every fold but ``k``; None when they hold too few pairs."""
    x, y, _ = _valid([g for j, fold in enumerate(folds) if j != k for g in fold])
    return _mapping(x, y) if x.size >= MIN_PAIRS else None


def _mapping(predicted: np.ndarray, reference: np.ndarray) -> Calibration:
    """A bare calibration of the pairs, for applying in cross-validation (no model, no file)."""
    return Calibration("", "", "", fit_monotone(predicted, reference), predicted.size, (0.0, 0.0), "")


def _held_out_calibrated(folds: list[list[Grid]], fitted: list[Calibration | None] | None = None,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Each fold's pixels calibrated by the mapping fitted on the other folds (``fitted``, when already known), pooled
    (flat: heights, reference, uncertainty): the scores an interval is fitted on. None with fewer than two folds that
    can be fitted."""
    fitted = fitted if fitted is not None else [_fitted_without(folds, k) for k in range(len(folds))]
    pooled = []
    for fold, mapping in zip(folds, fitted):
        if mapping is not None:
            pooled += [(mapping.apply(p), r, u) for p, r, u in fold]
    if len(pooled) < 2:
        return None
    heights, reference, spread = _valid(pooled)
    return (heights, reference, spread) if heights.size >= MIN_PAIRS else None


def _cross_validate(scheme: str, folds: list[list[Grid]], fitted: list[Calibration | None], level: float,
                    uncertainty: str) -> dict:
    """Metrics of the held-out parts, before and after the calibration fitted on the rest (``fitted``, one per fold),
    pooled over the folds; and the coverage and width of the interval fitted on the rest (its scores held out within
    the rest), against one global interval fitted alike."""
    before: list[tuple[np.ndarray, np.ndarray]] = []
    after: list[tuple[np.ndarray, np.ndarray]] = []
    bounds: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"before": [], "after": []}
    used = 0
    for k, (held, mapping) in enumerate(zip(folds, fitted)):
        if mapping is None:
            continue
        before += [(p, r) for p, r, _ in held]
        after += [(mapping.apply(p), r) for p, r, _ in held]
        used += 1
        scores = _held_out_calibrated([fold for j, fold in enumerate(folds) if j != k])
        if scores is None:
            continue
        heights, reference, spread = scores
        global_interval = fit_interval(heights, reference, None, "", level, max_bins=1)
        interval = fit_interval(heights, reference, spread, uncertainty, level)
        for p, r, u in held:
            calibrated = mapping.apply(p)
            bounds["before"].append((*global_interval.bounds(calibrated, None), r))
            bounds["after"].append((*interval.bounds(calibrated, u), r))
    if not used:
        return {"scheme": scheme, "folds": 0, "note": "no fold had enough pairs outside it to fit"}
    result = {"scheme": scheme, "folds": used, "before": _rounded(array_metrics(before)), "after": _rounded(array_metrics(after))}
    if bounds["after"]:
        result["interval"] = {"level": level, "scaled_by": "uncertainty" if uncertainty else "none",
                              **{name: coverage(*(np.concatenate([b[i].ravel() for b in parts]) for i in range(3)))
                                 for name, parts in bounds.items()}}
    else:
        result["interval_note"] = (f"not validated: that needs three folds or more, each fold's others holding {MIN_PAIRS} pairs "
                                   "once one more is held out")
    return result


def _points_fit(maps: Sequence[str], references: Sequence[str], points: PointReference) -> tuple[np.ndarray, np.ndarray, dict]:
    """The (map statistic, reference height) pairs of the points, and the cross-validation by spatial groups."""
    pairs = [footprint_pairs(m, r, points) for m, r in zip(maps, references)]
    predicted = np.concatenate([p.statistic for p in pairs])
    reference = np.concatenate([p.height for p in pairs])
    _check_pairs(predicted, reference, ", ".join(references), MIN_POINTS, "points")
    scheme = f"spatial groups of footprints ({points.describe()})"
    note = "points calibrate heights only: a footprint's error is not a pixel's, so no interval is fitted"
    try:
        folds = spatial_folds(np.concatenate([p.xy for p in pairs]), points.footprint_m)
    except EvaluationError as exc:
        return predicted, reference, {"scheme": scheme, "folds": 0, "note": str(exc), "interval_note": note}
    before, after = [], []
    for k in range(folds.max() + 1):
        train, test = folds != k, folds == k
        fitted = _mapping(predicted[train], reference[train])
        before.append((predicted[test][None], reference[test][None]))
        after.append((fitted.apply(predicted[test])[None], reference[test][None]))
    return predicted, reference, {"scheme": scheme, "folds": int(folds.max() + 1),
                                  "before": _rounded(array_metrics(before, block_size=10**9)),
                                  "after": _rounded(array_metrics(after, block_size=10**9)), "interval_note": note}


def _rounded(metrics) -> dict:
    """The validation's metrics (:data:`METRICS`) to four decimals; None where undefined."""
    return {m: None if metrics is None or getattr(metrics, m) is None else round(float(getattr(metrics, m)), 4) for m in METRICS}


def _plot(calibration: Calibration, predicted: np.ndarray, reference: np.ndarray, typical_spread: float | None,
          png: Path) -> None:
    """The mapping over the pairs' density, with the 1:1 line, the held-out metrics and the prediction interval (at the
    pairs' median uncertainty when it scales with one)."""
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
    interval = calibration.interval
    if interval is not None:
        spread = np.full(grid.shape, typical_spread) if interval.scaled and typical_spread is not None else None
        if not interval.scaled or spread is not None:
            lower, upper = interval.bounds(calibration.apply(grid), spread)
            where = " at the median uncertainty" if interval.scaled else ""
            ax.fill_between(grid, lower, upper, color="#b2182b", alpha=0.15, label=f"{interval.level:.0%} interval{where}")
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

