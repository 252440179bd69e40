"""How far one canopy height map is shifted against another of the same place: sub-pixel, from the parts that did not
change, by phase correlation on windows (Kuglin and Hines 1975), the peak refined to a fraction of a pixel from its larger
neighbour (Foroosh et al. 2002, IEEE Trans. Image Processing 11: 188-200).

Two orthophotos of one place differ by a metre or more, and the maps predicted from them inherit it:
crown edges then show as loss on one side and gain on the other. The shift is estimated on up to
:data:`MAX_WINDOWS` windows spread over the maps' overlap, each with enough valid pixels and texture;
windows whose estimate lies far from the others' median (a harvest, a new building: change, not
shift) are dropped, and the shift is the mean of the rest, with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from canopy.analysis.height_raster import HeightRaster

WINDOW = 128
MAX_WINDOWS = 64
MIN_WINDOWS = 3
MIN_TEXTURE_M = 1.0
MIN_APPLIED_PX = 0.1
"""Shifts smaller than this (px), or within two standard errors of none, are reported and not applied."""


@dataclass(frozen=True)
class Shift:
    """The second map's content lies at the first's place plus (``dx_m``, ``dy_m``) (x east, y north), known to
    ``se_m`` (standard error) from ``windows`` windows that agreed (of ``tried``)."""

    dx_m: float
    dy_m: float
    se_m: float
    windows: int
    tried: int
    res: float

    @property
    def significant(self) -> bool:
        """Whether the shift is worth applying: over :data:`MIN_APPLIED_PX` and over twice its standard error."""
        size = math.hypot(self.dx_m, self.dy_m)
        return size > MIN_APPLIED_PX * self.res and size > 2 * self.se_m

    def describe(self) -> str:
        """``dx=+1.02 m, dy=-0.48 m (± 0.03 m, 41 of 64 windows)``."""
        return (f"dx={self.dx_m:+.2f} m, dy={self.dy_m:+.2f} m (± {self.se_m:.2f} m, {self.windows} of {self.tried} windows"
                f"{'' if self.significant else '; not applied'})")


def estimate_shift(before: HeightRaster, after: HeightRaster, window: int = WINDOW) -> Shift | None:
    """The shift of ``after`` against ``before``, both read on one grid; None when too few windows can tell.

    Parameters
    ----------
    before, after
        The two maps on the same grid (:meth:`HeightRaster.on`).
    window
        Window side in pixels (shifts up to a quarter of it are found).

    Returns
    -------
    Shift or None
    """
    size = min(window, before.height, before.width)
    size -= size % 2
    rows = np.linspace(0, before.height - size, max(1, min(8, before.height // size))).astype(int)
    cols = np.linspace(0, before.width - size, max(1, min(8, before.width // size))).astype(int)
    taper = np.outer(np.hanning(size), np.hanning(size))
    found = []
    tried = 0
    for r in rows:
        for c in cols:
            a, b = before.read(int(r), int(c), size, size), after.read(int(r), int(c), size, size)
            tried += 1
            shift = _window_shift(a, b, taper)
            if shift is not None:
                found.append(shift)
    if len(found) < MIN_WINDOWS:
        return None
    shifts = np.array(found)
    median = np.median(shifts, axis=0)
    distance = np.hypot(*(shifts - median).T)
    spread = max(1.4826 * float(np.median(distance)), 0.25)
    kept = shifts[distance <= 3 * spread]
    if len(kept) < MIN_WINDOWS:
        return None
    mean = kept.mean(axis=0)
    se = float(np.hypot(*kept.std(axis=0))) / math.sqrt(len(kept))
    res = before.res
    return Shift(float(mean[1] * res), float(-mean[0] * res), se * res, len(kept), tried, res)


def _window_shift(a: np.ndarray, b: np.ndarray, taper: np.ndarray) -> tuple[float, float] | None:
    """(rows, cols) by which ``b``'s content is displaced from ``a``'s, sub-pixel; None for a window with too little
    data or texture, or no clear peak."""
    valid = np.isfinite(a) & np.isfinite(b)
    if valid.mean() < 0.8 or np.nanstd(a) < MIN_TEXTURE_M or np.nanstd(b) < MIN_TEXTURE_M:
        return None
    a = np.where(valid, a, np.nanmean(a)) - np.nanmean(a)
    b = np.where(valid, b, np.nanmean(b)) - np.nanmean(b)
    cross = np.fft.fft2(b * taper) * np.conj(np.fft.fft2(a * taper))
    surface = np.real(np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12)))
    peak = np.unravel_index(int(np.argmax(surface)), surface.shape)
    if surface[peak] < 0.03:  # white noise peaks near 1/n; a real shift stands well above it
        return None
    n = surface.shape[0]
    offsets = []
    for axis in (0, 1):
        at = list(peak)
        at[axis] = (peak[axis] - 1) % n
        left = surface[tuple(at)]
        at[axis] = (peak[axis] + 1) % n
        right = surface[tuple(at)]
        middle = surface[peak]
        side, sign = (right, 1.0) if right > left else (left, -1.0)
        candidates = [side / (side + middle), side / (side - middle)] if side != middle else [0.5]
        fraction = next((f for f in candidates if 0.0 <= f <= 1.0), 0.0)  # Foroosh et al. 2002, eq. 13
        whole = peak[axis] if peak[axis] <= n // 2 else peak[axis] - n
        offsets.append(whole + sign * float(fraction))
    if max(abs(o) for o in offsets) > n / 4:
        return None
    return offsets[0], offsets[1]
