"""Radiometry: how band values become the [0, 1] the models expect.

8-bit imagery is divided by 255. Other imagery (uint16, float) is stretched by robust percentiles
(2nd to 98th, per band) computed once over the whole region, never per tile or chip, so tiles of
one region share one scaling and no seams appear where they meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from canopy.errors import ImageryError

LOW_PERCENTILE = 2.0
HIGH_PERCENTILE = 98.0


@dataclass(frozen=True)
class Scaling:
    """Per-band linear stretch: ``(value - low) / (high - low)``, clipped to [0, 1]."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    @classmethod
    def for_uint8(cls) -> Scaling:
        """8-bit imagery as it is: value / 255."""
        return cls((0.0, 0.0, 0.0), (255.0, 255.0, 255.0))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Scale band values (3, H, W) to [0, 1] float32."""
        low = np.asarray(self.low, np.float32)[:, None, None]
        span = np.asarray(self.high, np.float32)[:, None, None] - low
        scaled = np.subtract(values, low, dtype=np.float32)
        scaled /= span
        return np.clip(scaled, 0.0, 1.0, out=scaled)

    def describe(self) -> str:
        """A one-line record for output tags."""
        if self == Scaling.for_uint8():
            return "uint8 / 255"
        return f"percentiles {LOW_PERCENTILE:g}-{HIGH_PERCENTILE:g} over the region: low={list(self.low)} high={list(self.high)}"


def region_scaling(samples: Sequence[np.ndarray], what: str) -> Scaling:
    """The percentile stretch of band values (3, N) sampled over a whole region.

    Raises
    ------
    ImageryError
        If there is no valid pixel, or a band has no spread.
    """
    found = [s for s in samples if s.size]
    values = np.concatenate(found, axis=1) if found else np.zeros((3, 0))
    if values.shape[1] == 0:
        raise ImageryError(f"{what} has no valid pixel over the region to compute its scaling from.")
    low = np.percentile(values, LOW_PERCENTILE, axis=1)
    high = np.percentile(values, HIGH_PERCENTILE, axis=1)
    if np.any(high <= low):
        raise ImageryError(f"{what} has a band with no spread over the region (constant values); check --bands.")
    return Scaling(tuple(float(v) for v in low), tuple(float(v) for v in high))


def scaling_for_region(sources: Sequence, grid) -> Scaling | None:
    """The percentile stretch, over the whole output grid, for the sources that are not 8-bit.

    Parameters
    ----------
    sources
        Imagery sources; those whose ``scaling`` is None are sampled.
    grid
        The output grid whose extent the statistics cover.

    Returns
    -------
    Scaling or None
        None when every source already has its scaling (8-bit imagery).

    Raises
    ------
    ImageryError
        As :func:`region_scaling`.
    """
    pending = [s for s in sources if s.scaling is None]
    if not pending:
        return None
    return region_scaling([s.sample(grid) for s in pending], ", ".join(s.name for s in pending[:3]))


def describe_scalings(scalings: Sequence[Scaling]) -> str:
    """The scalings in use, in one line for the output's tags."""
    own = [s for s in scalings if s != Scaling.for_uint8()]
    if not own:
        return Scaling.for_uint8().describe()
    described = own[0].describe()
    if len(own) < len(scalings):
        described += "; uint8 sources / 255"
    return described
