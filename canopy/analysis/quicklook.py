"""A quicklook PNG of a height map, with a colour bar in metres and a scale bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from canopy.io.atomic import atomic_path

_MAX_SIDE = 1024


def read_decimated(src: rasterio.io.DatasetReader, max_side: int = _MAX_SIDE) -> np.ma.MaskedArray:
    """Band 1 averaged down to at most ``max_side`` px a side (from overviews where the file has them), masked where nodata."""
    scale = max(1.0, max(src.width, src.height) / max_side)
    shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
    return src.read(1, out_shape=shape, resampling=Resampling.average, masked=True)


def write_quicklook(tif: Path, png: Path, vmax: float, title: str | None = None) -> None:
    """Render ``tif`` (read from an overview, at most 1024 px a side) to ``png`` atomically.

    The figure is drawn off-screen without pyplot, so it never changes matplotlib's backend
    (a notebook that predicts with a quicklook still shows its own figures).

    Parameters
    ----------
    tif
        A single-band height map in metres.
    png
        Where to write the picture.
    vmax
        Top of the colour scale in metres, the same as the QGIS style's.
    title
        Shown above the map (default the file name), followed by a warning when the map's tags say
        its weights were random.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from canopy.analysis.plot import draw_heights, random_weights_note

    with rasterio.open(tif) as src:
        data = read_decimated(src).filled(np.nan)
        crs = src.crs.to_string() if src.crs else "no CRS"
        left, bottom, right, top = src.bounds
        note = random_weights_note(src.tags())
    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_heights(ax, data, (left, right, bottom, top), vmax, (title or tif.name) + note, crs)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
