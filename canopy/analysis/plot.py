"""Canopy height maps and class maps drawn with matplotlib as a report needs them: the QGIS style's colour ramp and a
colour bar in metres (or a legend naming each class), a scale bar, plain coordinates with the CRS, and a title
that says what the heights are."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import xarray as xr

from canopy.io.qml import HEIGHT_COLOURS, style_range

_MAX_SIDE = 1024


def random_weights_note(tags: Mapping) -> str:
    """What a map's tags say its heights are, for its title: `` (random weights: heights mean nothing)``, `` (random
    backbone, trained head: not canopy's accuracy)``, `` (predicted by MODEL)``, or `` (not predicted by canopy)``."""
    if "canopy_model" not in tags:
        return " (not predicted by canopy)"
    backbone, head = (str(tags.get(k, "")).startswith("random") for k in ("canopy_weights", "canopy_head_weights"))
    if backbone and head:
        return " (random weights: heights mean nothing)"
    if backbone or head:
        return " (random backbone, trained head: not canopy's accuracy)" if backbone else " (random head: heights mean nothing)"
    return f" (predicted by {tags['canopy_model']})"


def draw_heights(ax, heights: np.ndarray, extent: tuple[float, float, float, float], vmax: float, title: str, crs: str) -> None:
    """Draw heights (H, W) in metres covering ``extent`` (left, right, bottom, top) on ``ax``, with a colour bar and scale bar."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("canopy_height", HEIGHT_COLOURS)
    cmap.set_bad("#ffffff", 0.0)
    image = ax.imshow(heights, cmap=cmap, vmin=0, vmax=vmax, extent=extent, interpolation="nearest")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, label="canopy height (m)", shrink=0.85)
    _frame(ax, extent, crs)


def draw_classes(ax, classes: np.ndarray, labels: list[str], extent: tuple[float, float, float, float], title: str, crs: str) -> None:
    """Draw a class map (H, W) of indexes into ``labels`` (negative for none) on ``ax``, a legend naming each class."""
    from matplotlib.colors import BoundaryNorm, LinearSegmentedColormap
    from matplotlib.patches import Patch

    ramp = LinearSegmentedColormap.from_list("canopy_classes", HEIGHT_COLOURS)
    colours = [ramp(k / max(1, len(labels) - 1)) for k in range(len(labels))]
    cmap = LinearSegmentedColormap.from_list("classes", colours, N=len(labels))
    values = np.ma.masked_less(classes, 0)
    ax.imshow(values, cmap=cmap, norm=BoundaryNorm(np.arange(len(labels) + 1) - 0.5, len(labels)), extent=extent,
              interpolation="nearest")
    ax.legend(handles=[Patch(facecolor=c, edgecolor="grey", label=label) for c, label in zip(colours, labels)],
              loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, title="classes", fontsize=9)
    ax.set_title(title)
    _frame(ax, extent, crs)


def _frame(ax, extent: tuple[float, float, float, float], crs: str) -> None:
    """Plain coordinates (no offset or scientific notation) with their axis names and the CRS, and a scale bar."""
    geographic = "4326" in crs or "+proj=longlat" in crs
    ax.set_xlabel(f"{'longitude (°)' if geographic else 'easting (m)'}, {crs}")
    ax.set_ylabel("latitude (°)" if geographic else "northing (m)")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.locator_params(nbins=4)
    ax.tick_params(labelsize=8)
    if not geographic:
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
    """Draw a canopy height map (the colour ramp of its QGIS style, a colour bar in metres) or a class map from
    :func:`canopy.height_classes` (a legend naming each class), with a scale bar and plain coordinates.

    Parameters
    ----------
    chm
        Heights in metres with a projected CRS (from :func:`canopy.open` or :func:`canopy.predict`), or
        classes (their ``labels`` attribute names them); maps larger than 1024 px a side are drawn from
        every n-th pixel.
    ax
        A matplotlib Axes; None makes a new figure.
    vmax
        Top of the colour scale in metres; default as the QGIS style: the 98th percentile rounded up to 5 m.
    title
        Default the map's name; either way it says what the heights are: predicted by which model,
        with random weights, or not predicted by canopy.

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
    if "labels" in chm.attrs and "flag_values" in chm.attrs:
        draw_classes(ax, heights.astype(np.int16), str(chm.attrs["labels"]).split("; "), (left, right, bottom, top), name, crs)
        return ax
    draw_heights(ax, heights, (left, right, bottom, top), vmax, name + random_weights_note(chm.attrs), crs)
    return ax
