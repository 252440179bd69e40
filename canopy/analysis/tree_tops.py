"""Tree tops in a canopy height array: local maxima in a window that grows with height, after light smoothing.

The method is the variable-window local-maximum filter of Popescu and Wynne (2004), as lidR's
``lmf`` applies it to a CHM: a pixel is a top when it is at least ``min_height`` tall and no pixel
of the smoothed CHM within a disc of radius ``window_radius(h)`` around it is taller. Smoothing with
a narrow Gaussian first removes the spurious maxima of single branches and noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_CHUNK = 4096  # tops checked at once against their discs: bounds the (tops x disc) array
TALLEST_TREE_M = 120.0
"""Above the tallest trees measured (about 116 m), so no search window is wider than the halo."""


@dataclass(frozen=True)
class TreeParameters:
    """How trees are found and delineated; every length is in metres, so one set works from 0.1 m to 2 m pixels.

    The defaults scored best on the bundled NEON plots' lidar CHMs (``docs/trees.md``, which gives
    the search and its caveat: 13 plots of two conifer sites).

    Parameters
    ----------
    min_height
        Tops lower than this are not trees, and crowns stop here (2 m, the usual CHM threshold
        for trees against shrubs).
    smoothing
        Standard deviation of the Gaussian applied before looking for maxima.
    window_intercept, window_slope
        The search radius around a pixel of height ``h`` is ``window_intercept + window_slope * h``
        (tall trees have wide crowns, so their tops are further apart).
    crown_ratio
        A crown holds pixels at least this fraction of its top's height, so gaps and understorey
        between crowns are left out (Silva et al. 2016's ``exclusion``; lidR's default 0.3 keeps
        lower branches that people do not outline on an orthophoto; 0.6 scored best here).
    crown_diameter_ratio
        A crown is at most this fraction of its top's height across (Silva et al. 2016's 0.6).
    max_crown_diameter
        No pixel of a crown is further than half of this from its top, however tall; it also sets
        the halo a block is read with, so a crown on a block edge is whole.

    .. versionadded:: 0.3
    """

    min_height: float = 2.0
    smoothing: float = 0.4
    window_intercept: float = 1.0
    window_slope: float = 0.03
    crown_ratio: float = 0.6
    crown_diameter_ratio: float = 0.6
    max_crown_diameter: float = 20.0

    def window_radius(self, height: np.ndarray | float) -> np.ndarray | float:
        """The search radius (m) around a pixel of ``height`` metres (heights above :data:`TALLEST_TREE_M` count as that)."""
        return self.window_intercept + self.window_slope * np.minimum(np.asarray(height), TALLEST_TREE_M)

    def halo(self, res: float) -> int:
        """Pixels a block needs beyond its edges so that its trees are the whole map's.

        A crown reaches half the maximum diameter from its top, so the tops competing for its
        pixels lie within one diameter; finding those needs their search windows, and the
        windows need the smoothing's reach (4 standard deviations).
        """
        reach = self.max_crown_diameter + float(self.window_radius(TALLEST_TREE_M)) + 4 * self.smoothing
        return int(np.ceil(reach / res)) + 1


def smoothed(chm: np.ndarray, res: float, sigma_m: float) -> np.ndarray:
    """The CHM smoothed by a Gaussian of ``sigma_m`` metres over its valid pixels only (NaN stays NaN).

    Normalised convolution: no-data neither pulls heights down nor spreads into the valid area.
    """
    valid = np.isfinite(chm)
    if sigma_m <= 0:
        return chm.astype(np.float32, copy=True)
    sigma = sigma_m / res
    filled = np.where(valid, chm, 0.0).astype(np.float64)
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma, mode="constant", truncate=4.0)
    total = ndimage.gaussian_filter(filled, sigma, mode="constant", truncate=4.0)
    out = np.full(chm.shape, np.nan, np.float32)
    np.divide(total, weight, out=out, where=valid & (weight > 0), casting="unsafe")
    return out


def find_tops(surface: np.ndarray, res: float, params: TreeParameters) -> tuple[np.ndarray, np.ndarray]:
    """The tops of a smoothed CHM, as (rows, cols) of its pixels in raster order.

    Ties are broken by position: a pixel is a top if it is strictly taller than every pixel of its
    disc that comes before it in raster order and at least as tall as every other, so a flat top
    gives one tree, the same one whichever block it is found in.

    Parameters
    ----------
    surface
        The smoothed CHM (from :func:`smoothed`), NaN where there is no data.
    res
        Its pixel size in metres.
    params
        Minimum height and window.

    Returns
    -------
    tuple of numpy.ndarray
        Row and column indices of the tops.
    """
    h = np.where(np.isfinite(surface), surface, -np.inf)
    candidates = (h >= params.min_height) & (h == ndimage.maximum_filter(h, size=3, mode="constant", cval=-np.inf))
    rows, cols = np.nonzero(candidates)
    radii = np.floor(np.asarray(params.window_radius(h[rows, cols])) / res).astype(int)
    keep = np.zeros(len(rows), bool)
    pad = int(radii.max()) if len(radii) else 0
    padded = np.pad(h, pad, constant_values=-np.inf)
    for radius in np.unique(radii):
        dy, dx = np.nonzero(np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius + 1e-9)
        dy, dx = dy - radius, dx - radius
        before = (dy < 0) | ((dy == 0) & (dx < 0))
        (group,) = np.nonzero(radii == radius)
        for start in range(0, len(group), _CHUNK):
            idx = group[start : start + _CHUNK]
            r, c = rows[idx, None] + pad, cols[idx, None] + pad
            disc = padded[r + dy, c + dx]
            centre = h[rows[idx], cols[idx]][:, None]
            keep[idx] = ~((disc > centre) | ((disc == centre) & before)).any(axis=1)
    return rows[keep], cols[keep]
