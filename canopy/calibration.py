"""A calibration: the monotone mapping from one model's heights to lidar heights that ``canopy calibrate`` fits
(:mod:`canopy.accuracy.calibration_fit`), and the prediction interval around them
(:mod:`canopy.accuracy.interval_fit`), as a record the predict path and the analyses apply, read, write and check.

Between breakpoints heights are interpolated; outside the fitted range they are shifted by the
correction at its nearest end, and no height goes below 0.

The interval is ``[h + q_lo(bin) * s, h + q_hi(bin) * s]`` for a calibrated height ``h``: ``s`` is the
pixel's raw uncertainty (``<map>.uncertainty.tif``, floored) when the interval was fitted with one,
1 m otherwise; ``bin`` is the calibrated height's bin; ``q_lo`` and ``q_hi`` are the bin's conformal
quantiles of the held-out residuals ``(lidar - h) / s`` at ``(1 - level) / 2`` and ``(1 + level) / 2``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from canopy.errors import CanopyError
from canopy.io.atomic import atomic_path

UNNAMED_UNCERTAINTY = "an uncertainty"
"""The kind of a map's uncertainty when its tags do not name one (a sidecar canopy did not write)."""
FORMAT = "canopy-calibration/2"
_READABLE = ("canopy-calibration/1", FORMAT)  # version 1 files have no interval


class CalibrationError(CanopyError, ValueError):
    """Pairs that cannot calibrate, a calibration file that cannot be read, or one made for another model."""


def missing_uncertainty(what: str, detail: str = "") -> CalibrationError:
    """The error for an interval that scales with each pixel's uncertainty applied to ``what``, which has none."""
    return CalibrationError(f"The calibration's interval scales with each pixel's uncertainty, and {what} has none{detail}; "
                            "predict with --uncertainty.")


@dataclass(frozen=True)
class PredictionInterval:
    """A conformal prediction interval around calibrated heights, by calibrated-height bin (module docstring).

    ``edges`` are the inner edges of the height bins (m); ``probabilities`` the tail probabilities
    at which each bin's ``quantiles`` of the scaled residuals were taken (conformal ranks, so a
    level between two is interpolated); ``counts`` the residuals per bin. ``uncertainty`` is the
    ``canopy_uncertainty`` tag of the maps it was fitted on (empty when not scaled), which a map it
    is applied to must share; ``floor_m`` the smallest scale used.

    .. versionadded:: 0.3.0
    """

    level: float
    uncertainty: str
    floor_m: float
    edges: tuple[float, ...]
    probabilities: tuple[float, ...]
    quantiles: tuple[tuple[float, ...], ...]
    counts: tuple[int, ...]

    @property
    def scaled(self) -> bool:
        """Whether the interval scales with each pixel's raw uncertainty."""
        return bool(self.uncertainty)

    def check_uncertainty(self, tags: Mapping[str, str], what: str) -> None:
        """Refuse to scale by the uncertainty of ``what`` (its ``canopy_uncertainty`` tag in ``tags``) when it is of
        another kind than the one the interval was fitted on (another model's bins, with or without flips)."""
        theirs = tags.get("canopy_uncertainty", UNNAMED_UNCERTAINTY)
        if self.scaled and theirs != self.uncertainty:
            raise CalibrationError(
                f"The calibration's interval was fitted on maps whose uncertainty is the {self.uncertainty}, not the "
                f"{theirs} of {what}; use maps made with that model and the same --tta setting as those.")

    def check_level(self, level: float) -> None:
        """Refuse a level the stored quantiles cannot give."""
        lowest = 1.0 - 2.0 * self.probabilities[0]
        if not 0.0 < level <= lowest + 1e-9:
            raise CalibrationError(f"Interval level {level:g} is outside what the calibration holds (up to {lowest:g}); "
                                   "pass a level such as 0.9.")

    def bounds(self, heights: np.ndarray, spread: np.ndarray | None, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The (lower, upper) bounds in metres (float32, NaN where ``heights`` is NaN, never below 0) of calibrated heights.

        Raises
        ------
        CalibrationError
            If the interval scales with uncertainty and ``spread`` is None, or the level is out of range.
        """
        level = self.level if level is None else float(level)
        self.check_level(level)
        if self.scaled and spread is None:
            raise missing_uncertainty("the map")
        h = np.asarray(heights, np.float64)
        scale = np.maximum(np.asarray(spread, np.float64), self.floor_m) if self.scaled else 1.0
        table = np.array(self.quantiles, np.float64)
        tail = (1.0 - level) / 2.0
        low = np.array([np.interp(tail, self.probabilities, row) for row in table])
        high = np.array([np.interp(1.0 - tail, self.probabilities, row) for row in table])
        index = np.searchsorted(np.array(self.edges, np.float64), np.nan_to_num(h), side="right")
        lower = np.maximum(h + low[index] * scale, 0.0)
        upper = np.maximum(h + high[index] * scale, lower)
        missing = np.isnan(h) | np.isnan(scale)
        return (np.where(missing, np.nan, lower).astype(np.float32), np.where(missing, np.nan, upper).astype(np.float32))


@dataclass(frozen=True)
class Calibration:
    """A monotone mapping from one model's heights to lidar heights, and what it was fitted on.

    ``breakpoints`` are (predicted, calibrated) heights in metres, both non-decreasing; ``range_m``
    is the predicted heights it was fitted over; ``model``, ``weights`` and ``head_weights`` are the
    maps' ``canopy_model``, ``canopy_weights`` and ``canopy_head_weights`` tags, which a map it is
    applied to must share; ``validation`` holds the held-out metrics before and after; ``interval``
    the prediction interval, when it was fitted on pixels (not on points).

    .. versionadded:: 0.3
    .. versionchanged:: 0.3.0
       ``interval``.
    """

    model: str
    weights: str
    head_weights: str
    breakpoints: tuple[tuple[float, float], ...]
    pairs: int
    range_m: tuple[float, float]
    fitted: str
    references: tuple[str, ...] = ()
    validation: dict = field(default_factory=dict)
    interval: PredictionInterval | None = None

    def require_interval(self) -> PredictionInterval:
        """The prediction interval; refused in one sentence when the calibration holds none.

        Raises
        ------
        CalibrationError
            If it was fitted on points, or by canopy before 0.3.0.
        """
        if self.interval is None:
            raise CalibrationError("The calibration holds no prediction interval (it was fitted on points, or by canopy "
                                   "before 0.3.0); fit one on lidar plots with `canopy calibrate`.")
        return self.interval

    def apply(self, heights: np.ndarray) -> np.ndarray:
        """The calibrated heights (float32; NaN stays NaN, nothing below 0)."""
        x, y = np.array(self.breakpoints, np.float64).T
        h = np.asarray(heights, np.float64)
        out = np.interp(h, x, y)
        out = np.where(h < x[0], h + (y[0] - x[0]), out)
        out = np.where(h > x[-1], h + (y[-1] - x[-1]), out)
        return np.where(np.isnan(h), np.nan, np.maximum(out, 0.0)).astype(np.float32)

    @property
    def identity(self) -> tuple[str, str, str]:
        """(model, weights, head weights): what a map must have been made with."""
        return self.model, self.weights, self.head_weights

    @property
    def digest(self) -> str:
        """SHA-256 of the mapping and the model it is for, as maps' tags record it."""
        interval = [] if self.interval is None else [asdict(self.interval)]  # files without one keep their digest
        text = json.dumps([self.identity, self.breakpoints, *interval], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def check_for(self, identity: tuple[str, str, str], what: str) -> None:
        """Refuse a map (or run) made with another model or weights, in one sentence."""
        if tuple(identity) != self.identity:
            raise CalibrationError(
                f"The calibration was fitted for model {self.model} with weights {self.weights[:16]}, not for {what} "
                f"({identity[0]} with weights {identity[1][:16]}); fit one for this model with `canopy calibrate`."
            )

    def write(self, path: str | os.PathLike) -> None:
        """Write it as JSON, atomically."""
        data = {"format": FORMAT, **asdict(self)}
        data["breakpoints"] = [list(point) for point in self.breakpoints]
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike) -> Calibration:
        """Read a calibration file.

        Raises
        ------
        CalibrationError
            If it is not a canopy calibration file.
        """
        try:
            data = json.loads(Path(path).read_text())
            if data.pop("format") not in _READABLE:
                raise ValueError("another format")
            interval = data.pop("interval", None)
            if interval is not None:
                interval = PredictionInterval(**{k: tuple(map(tuple, v)) if k == "quantiles" else
                                                 tuple(v) if isinstance(v, list) else v for k, v in interval.items()})
            points = tuple((float(x), float(y)) for x, y in data.pop("breakpoints"))
            if len(points) < 1 or any(b[0] < a[0] or b[1] < a[1] for a, b in zip(points, points[1:])):
                raise ValueError("breakpoints are not non-decreasing")
            return cls(breakpoints=points, range_m=tuple(data.pop("range_m")), references=tuple(data.pop("references", ())),
                       interval=interval, **data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"Calibration {path} cannot be read ({exc}); pass a file from `canopy calibrate`.") from None


def map_identity(tags: Mapping[str, str]) -> tuple[str, str, str]:
    """The (model, weights, head weights) a map's tags name; ``unknown`` for maps canopy did not make."""
    return (tags.get("canopy_model", "unknown"), tags.get("canopy_weights", "unknown"), tags.get("canopy_head_weights", "unknown"))


