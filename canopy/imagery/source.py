"""The interface every imagery source keeps, and the mosaic of several sources on one grid."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from rasterio.crs import CRS

from canopy.errors import ImageryReadError
from canopy.grid import BBox, OutputGrid


@dataclass
class Patch:
    """Imagery on a grid window: RGB scaled to [0, 1] (3, H, W) float32, and where it is valid (H, W) bool."""

    rgb: np.ndarray
    valid: np.ndarray


@runtime_checkable
class ImagerySource(Protocol):
    """Something that can say where it has imagery and read it onto any output grid."""

    name: str
    crs: CRS
    bounds: BBox
    res: float

    def footprint(self, crs: CRS) -> BBox:
        """Bounds of the imagery in ``crs``."""
        ...

    def read(self, grid: OutputGrid) -> Patch:
        """RGB and validity on ``grid`` (which may reach beyond the imagery)."""
        ...

    def close(self) -> None:
        """Release open files."""
        ...


def open_imagery(sources: list[str | os.PathLike | ImagerySource]) -> list[ImagerySource]:
    """Open every imagery source a user named.

    Parameters
    ----------
    sources
        GeoTIFF paths, or objects already keeping the :class:`ImagerySource` interface.

    Returns
    -------
    list of ImagerySource
        In the order given, which is their priority where they overlap.

    Raises
    ------
    ImageryReadError
        If a path does not exist or is not a raster.
    ImageryError
        If a raster has no georeferencing, fewer than 3 bands, or an unsupported data type.
    """
    from canopy.imagery.geotiff import GeoTiffSource

    if not sources:
        raise ImageryReadError("No imagery given; pass at least one --imagery GeoTIFF.")
    opened: list[ImagerySource] = []
    try:
        for source in sources:
            opened.append(source if isinstance(source, ImagerySource) else GeoTiffSource(source))
    except BaseException:
        for source in opened:
            source.close()
        raise
    return opened


def read_mosaic(sources: list[ImagerySource], grid: OutputGrid) -> Patch:
    """Read all sources onto ``grid``; where several have valid pixels, the earlier one wins.

    Parameters
    ----------
    sources
        In priority order.
    grid
        The window of the output grid to fill.

    Returns
    -------
    Patch
    """
    rgb = np.zeros((3, grid.height, grid.width), dtype=np.float32)
    valid = np.zeros((grid.height, grid.width), dtype=bool)
    for source in sources:
        if valid.all():
            break
        patch = source.read(grid)
        fill = patch.valid & ~valid
        rgb[:, fill] = patch.rgb[:, fill]
        valid |= fill
    return Patch(rgb, valid)
