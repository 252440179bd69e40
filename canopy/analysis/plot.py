"""A canopy height map drawn with matplotlib: the QGIS style's colour ramp, a colour bar in metres, a scale bar."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import xarray as xr

from canopy.io.qml import HEIGHT_COLOURS, style_range

_MAX_SIDE = 1024


def random_weights_note(tags: Mapping) -> str:
    """`` (random weights: heights mean nothing)`` when a map's tags say its backbone or head had random weights."""
    weights = [str(tags.get(k, "")) for k in ("canopy_weights", "canopy_head_weights")]
    return " (random weights: heights mean nothing)" if any(w.startswith("random") for w in weights) else ""


def draw_heights(ax, heights: np.ndarray, extent: tuple[float, float, float, float], vmax: float, title: str, crs: str) -> None:
    """Draw heights (H, W) in metres covering ``extent`` (left, right, bottom, top) on ``ax``, with a colour bar and scale bar."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("canopy_height", HEIGHT_COLOURS)
    cmap.set_bad("#ffffff", 0.0)
    image = ax.imshow(heights, cmap=cmap, vmin=0, vmax=vmax, extent=extent, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(crs)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(image, ax=ax, label="canopy height (m)", shrink=0.85)
    _scale_bar(ax, extent)


def _scale_bar(ax, extent: tuple[float, float, float, float]) -> None:
    """A bar of a round length (1, 2 or 5 times a power of ten metres, about a fifth of the width) in the lower left."""
    left, right, bottom, top = extent
    target = (right - left) / 5
    power = 10 ** math.floor(math.log10(target))
    length = max(m * power for m in (1, 2, 5) if m * power <= target)
    x, y = left + (right - left) * 0.05, bottom + (top - bottom) * 0.05
    ax.plot([x, x + length], [y, y], color="black", linewidth=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(x + length / 2, y + (top - bottom) * 0.02, label, ha="center", va="bottom", fontsize=9)


def plot(chm: xr.DataArray, ax=None, vmax: float | None = None, title: str | None = None):
    """Draw a canopy height map: the colour ramp of its QGIS style, a colour bar in metres, a scale bar.

    Parameters
    ----------
    chm
        Heights in metres with a projected CRS (from :func:`canopy.open` or :func:`canopy.predict`);
        maps larger than 1024 px a side are drawn from every n-th pixel.
    ax
        A matplotlib Axes; None makes a new figure.
    vmax
        Top of the colour scale in metres; default as the QGIS style: the 98th percentile rounded up to 5 m.
    title
        Default the map's name; either way it says when the weights were random.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    step = max(1, math.ceil(max(chm.shape) / _MAX_SIDE))
    heights = np.asarray(chm[::step, ::step].values, np.float32)
    if vmax is None:
        finite = heights[np.isfinite(heights)]
        vmax = style_range(float(np.percentile(finite, 98)) if finite.size else 0.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    left, bottom, right, top = chm.rio.bounds()
    crs = chm.rio.crs.to_string() if chm.rio.crs else "no CRS"
    name = title or str(chm.attrs.get("long_name", chm.name or "canopy height"))
    draw_heights(ax, heights, (left, right, bottom, top), vmax, name + random_weights_note(chm.attrs), crs)
    return ax
