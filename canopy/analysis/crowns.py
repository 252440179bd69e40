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
    reach = params.max_crown_diameter / 2 / res
    distance, nearest = cKDTree(np.column_stack([rows, cols])).query(np.column_stack([yy, xx]), k=_TIED, distance_upper_bound=reach)
    # of tops at the same distance, the first in raster order (the same order in every window)
    d = distance[:, 0]
    k = np.where(distance == d[:, None], nearest, len(rows)).min(axis=1)
    found = np.isfinite(d)
    yy, xx, k, d = yy[found], xx[found], k[found], d[found]
    top_height = surface[rows[k], cols[k]]
    keep = (surface[yy, xx] >= params.crown_ratio * top_height) & (d * res <= params.crown_diameter_ratio * top_height / 2)
    labels[yy[keep], xx[keep]] = k[keep] + 1
    return labels
