"""A calibration: the monotone mapping from one model's heights to lidar heights that ``canopy calibrate`` fits
(:mod:`canopy.accuracy.calibration_fit`), as a record the predict path and the analyses apply, read, write and check.

Between breakpoints heights are interpolated; outside the fitted range they are shifted by the
correction at its nearest end, and no height goes below 0.
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

FORMAT = "canopy-calibration/1"


class CalibrationError(CanopyError, ValueError):
    """Pairs that cannot calibrate, a calibration file that cannot be read, or one made for another model."""


@dataclass(frozen=True)
class Calibration:
    """A monotone mapping from one model's heights to lidar heights, and what it was fitted on.

    ``breakpoints`` are (predicted, calibrated) heights in metres, both non-decreasing; ``range_m``
    is the predicted heights it was fitted over; ``model``, ``weights`` and ``head_weights`` are the
    maps' ``canopy_model``, ``canopy_weights`` and ``canopy_head_weights`` tags, which a map it is
    applied to must share; ``validation`` holds the held-out metrics before and after.

    .. versionadded:: 0.3
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
        text = json.dumps([self.identity, self.breakpoints], separators=(",", ":"))
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
            if data.pop("format") != FORMAT:
                raise ValueError("another format")
            points = tuple((float(x), float(y)) for x, y in data.pop("breakpoints"))
            if len(points) < 1 or any(b[0] < a[0] or b[1] < a[1] for a, b in zip(points, points[1:])):
                raise ValueError("breakpoints are not non-decreasing")
            return cls(breakpoints=points, range_m=tuple(data.pop("range_m")), references=tuple(data.pop("references", ())), **data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CalibrationError(f"Calibration {path} cannot be read ({exc}); pass a file from `canopy calibrate`.") from None


def map_identity(tags: Mapping[str, str]) -> tuple[str, str, str]:
    """The (model, weights, head weights) a map's tags name; ``unknown`` for maps canopy did not make."""
    return (tags.get("canopy_model", "unknown"), tags.get("canopy_weights", "unknown"), tags.get("canopy_head_weights", "unknown"))


