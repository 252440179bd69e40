"""Prediction intervals around calibrated heights: split conformal by plot, scaled by each pixel's raw uncertainty and
taken per calibrated-height bin, so that an interval widens where the model is less sure.

**Scores.** For a pixel with calibrated height ``h``, lidar height ``y`` and raw uncertainty ``u``
(``<map>.uncertainty.tif``), the score is ``(y - h) / s`` with ``s = max(u, floor)``; without an
uncertainty ``s`` is 1 m. The floor (the 1st percentile of ``u``, at least 1 cm) keeps pixels whose
chips agree exactly from getting an interval of zero width.

**Scaled or not.** With an uncertainty, the interval is fitted both ways and the narrower kept
(:func:`fit_interval`); the calibration records which (``scaled_by`` in its validation).

**Conformal quantiles.** Pixels are put in up to :data:`MAX_BINS` bins of calibrated height (equal
counts, at least :data:`MIN_PER_BIN` each), and in each bin the scores' quantiles are taken at
conformal ranks (Vovk et al. 2005; Lei et al. 2018): the upper ``p`` quantile is the
``ceil((n + 1) p)``-th smallest of ``n`` scores, the lower the ``floor((n + 1) p)``-th, so that a new
pixel of that bin falls inside with probability at least the level when pixels are exchangeable.
Binning is Mondrian conformal prediction (Vovk et al. 2005, ch. 4): the coverage holds in each bin.

**Never within a plot.** The scores come from heights calibrated by a mapping fitted without
the plot they are on (each plot's heights from the mapping fitted on the others; the four spatial
quarters of a single plot), so the interval is fitted on held-out errors, as it will be used.
Pixels of one plot are not independent, so the guarantee is for plots like the held-out ones; the
calibration's validation measures it on plots held out of everything (``canopy calibrate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from canopy.calibration import PredictionInterval

LEVEL = 0.9
"""The default level: 90 % of held-out pixels inside."""
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
"""The levels whose quantiles a calibration stores (with the one it was fitted at); others are interpolated."""
MAX_BINS = 8
MIN_PER_BIN = 500
MIN_FLOOR_M = 0.01


def tail_probabilities(levels: Iterable[float]) -> tuple[float, ...]:
    """The lower and upper tail probabilities, ``(1 - level) / 2`` and ``(1 + level) / 2``, of each level, sorted."""
    return tuple(sorted({round((1 - level) / 2, 6) for level in levels} | {round((1 + level) / 2, 6) for level in levels}))


def conformal_quantiles(scores: np.ndarray, probabilities: Iterable[float]) -> list[float]:
    """The scores' quantiles at conformal ranks: ``ceil((n + 1) p)``-th smallest above the median, ``floor((n + 1) p)``-th
    below it, clipped to the scores' range."""
    ordered = np.sort(scores)
    n = ordered.size
    ranks = [min(math.ceil((n + 1) * p), n) if p >= 0.5 else max(math.floor((n + 1) * p), 1) for p in probabilities]
    return [float(ordered[k - 1]) for k in ranks]


def scale_of(spread: np.ndarray | None, floor: float) -> np.ndarray | float:
    """What a pixel's residual is divided by: its uncertainty, floored, or 1 m without one."""
    return 1.0 if spread is None else np.maximum(spread, floor)


def fit_interval(heights: np.ndarray, reference: np.ndarray, spread: np.ndarray | None, uncertainty: str = "",
                 level: float = LEVEL, max_bins: int = MAX_BINS) -> PredictionInterval:
    """Fit a prediction interval on held-out calibrated heights and their lidar heights (module docstring).

    With an uncertainty, the interval is fitted both scaled by it and not, and the one whose mean
    width at ``level`` is smaller on these pixels is kept (both cover the level by construction): a
    raw uncertainty that says nothing beyond the height bins only adds its own noise to the scores.

    Parameters
    ----------
    heights
        Calibrated heights of pixels, each from a mapping fitted without its plot (flat, valid).
    reference
        Their lidar heights.
    spread
        Their raw uncertainty, or None to fit an interval that does not scale.
    uncertainty
        The maps' ``canopy_uncertainty`` tag (with ``spread``).
    level
        The interval's default level.
    max_bins
        At most this many calibrated-height bins (1: one interval for every height).

    Returns
    -------
    PredictionInterval
    """
    plain = _fit(heights, reference, None, "", level, max_bins)
    if spread is None:
        return plain
    scaled = _fit(heights, reference, spread, uncertainty, level, max_bins)
    widths = [float(np.mean(np.subtract(*reversed(c.bounds(heights, spread))))) for c in (plain, scaled)]
    return scaled if widths[1] < widths[0] else plain


def _fit(heights: np.ndarray, reference: np.ndarray, spread: np.ndarray | None, uncertainty: str, level: float,
         max_bins: int) -> PredictionInterval:
    """The interval scaled by ``spread`` (or not), by up to ``max_bins`` bins of calibrated height."""
    floor = max(MIN_FLOOR_M, float(np.percentile(spread, 1))) if spread is not None else 1.0
    scores = (reference - heights) / scale_of(spread, floor)
    count = int(np.clip(heights.size // MIN_PER_BIN, 1, max_bins))
    edges = np.unique(np.round(np.quantile(heights, np.linspace(0, 1, count + 1)[1:-1]), 3))
    filled = np.flatnonzero(np.bincount(np.searchsorted(edges, heights, side="right"), minlength=len(edges) + 1))
    edges = edges[filled[1:] - 1]  # ties (bare ground calibrated to 0 m) leave bins empty: keep the edges between full ones
    index = np.searchsorted(edges, heights, side="right")
    probabilities = tail_probabilities({*LEVELS, level})
    quantiles, counts = [], []
    for k in range(len(edges) + 1):
        chosen = scores[index == k]
        quantiles.append(tuple(round(q, 4) for q in conformal_quantiles(chosen, probabilities)))
        counts.append(int(chosen.size))
    return PredictionInterval(float(level), uncertainty if spread is not None else "", round(floor, 4),
                              tuple(float(e) for e in edges), probabilities, tuple(quantiles), tuple(counts))
