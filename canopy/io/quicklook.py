"""A quicklook PNG of a height map, with a colour bar in metres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from canopy.io.atomic import atomic_path
from canopy.io.qml import HEIGHT_COLOURS

_MAX_SIDE = 1024


def write_quicklook(tif: Path, png: Path, vmax: float, title: str | None = None) -> None:
    """Render ``tif`` (read from an overview, at most 1024 px a side) to ``png`` atomically.

    Parameters
    ----------
    tif
        A single-band height map in metres.
    png
        Where to write the picture.
    vmax
        Top of the colour scale in metres, the same as the QGIS style's.
    title
        Shown above the map; defaults to the file name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    with rasterio.open(tif) as src:
        scale = max(1.0, max(src.width, src.height) / _MAX_SIDE)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        data = src.read(1, out_shape=shape, resampling=Resampling.average, masked=True).filled(np.nan)
        crs = src.crs.to_string() if src.crs else "no CRS"
    cmap = LinearSegmentedColormap.from_list("canopy_height", HEIGHT_COLOURS)
    cmap.set_bad("#ffffff", 0.0)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    image = ax.imshow(data, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title or tif.name)
    ax.set_xlabel(crs)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(image, ax=ax, label="canopy height (m)", shrink=0.85)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
