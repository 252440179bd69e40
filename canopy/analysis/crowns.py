"""Crowns around tree tops by Silva et al. (2016)'s rule, as lidR's ``silva2016``: each pixel goes to its nearest top.

A pixel belongs to the crown of the nearest top (a Voronoi tessellation of the tops) if it is at
least ``min_height`` tall, at least ``crown_ratio`` of that top's height, and no further from it
than half the crown's largest diameter: ``crown_diameter_ratio`` times the top's height, and
never more than ``max_crown_diameter``. Of what is left, a crown is the connected part that holds
its top (chosen when crowns become polygons).

Unlike a watershed, whose flooding order breaks ties between equal heights differently in windows
of different extent, each pixel's crown depends only on the tops within a crown's reach of it, so
a map cut into blocks gives exactly the crowns of the whole map.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from canopy.analysis.tree_tops import TreeParameters

_TIED = 16  # tops asked for per pixel: more than can stand at one distance from it on any practical layout
_PIXELS = 1 << 18  # pixels looked up at once: bounds the (pixels x tops) arrays to about 70 MB


def crown_labels(surface: np.ndarray, rows: np.ndarray, cols: np.ndarray, res: float, params: TreeParameters) -> np.ndarray:
    """Label each pixel with the crown it belongs to: ``k + 1`` for the top ``(rows[k], cols[k])``, 0 for none.

    Parameters
    ----------
    surface
        The smoothed CHM, NaN where there is no data.
    rows, cols
        The tops in raster order, from :func:`~canopy.analysis.tree_tops.find_tops`.
    res
        Pixel size in metres.
    params
        Minimum height, crown ratio and crown diameters.

    Returns
    -------
    numpy.ndarray
        int32 labels, the shape of ``surface``.
    """
    labels = np.zeros(surface.shape, np.int32)
    if len(rows) == 0:
        return labels
    yy, xx = np.nonzero(np.nan_to_num(surface, nan=-np.inf) >= params.min_height)
    tree = cKDTree(np.column_stack([rows, cols]))
    reach = params.max_crown_diameter / 2 / res
    for start in range(0, len(yy), _PIXELS):
        y, x = yy[start : start + _PIXELS], xx[start : start + _PIXELS]
        d, k = _nearest_top(tree, np.column_stack([y, x]), reach, len(rows))
        found = np.isfinite(d)
        y, x, k, d = y[found], x[found], k[found], d[found]
        top_height = surface[rows[k], cols[k]]
        keep = (surface[y, x] >= params.crown_ratio * top_height) & (d * res <= params.crown_diameter_ratio * top_height / 2)
        labels[y[keep], x[keep]] = k[keep] + 1
    return labels


def _nearest_top(tree: cKDTree, pixels: np.ndarray, reach: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest top within ``reach`` (inf if none) and its index; of tops at the same distance,
    the first in raster order, the same in every window. Only pixels with a tie ask for more than two tops."""
    if count == 1:
        return tree.query(pixels, k=1, distance_upper_bound=reach)
    distance, nearest = tree.query(pixels, k=2, distance_upper_bound=reach)
    d, k = distance[:, 0], nearest[:, 0].copy()
    (tied,) = np.nonzero(np.isfinite(d) & (distance[:, 1] == d))
    if len(tied):
        far, index = tree.query(pixels[tied], k=min(_TIED, count), distance_upper_bound=reach)
        k[tied] = np.where(far == d[tied, None], index, count).min(axis=1)
    return d, k
