"""The interface every imagery source keeps, what reading one gives, and the options that choose imagery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from rasterio.crs import CRS

from canopy.choices import MosaicOrder
from canopy.errors import ImageryError
from canopy.grid import BBox, OutputGrid
from canopy.imagery.radiometry import Scaling


@dataclass
class Patch:
    """Imagery on a grid window: RGB scaled to [0, 1] (3, H, W) float32, and where it is valid (H, W) bool."""

    rgb: np.ndarray
    valid: np.ndarray


@runtime_checkable
class ImagerySource(Protocol):
    """Something that can say where it has imagery and read it onto any output grid.

    ``date`` (POSIX seconds) orders sources for the mosaic; ``taken`` is the imagery's date as ISO
    8601 text, or None when not known; ``scaling`` maps band values to [0, 1] and is None only for
    imagery that is not 8-bit and still waits for its region-wide scaling; ``fingerprint`` is what a
    resumed run compares to notice changed imagery (a tuple of plain values).

    .. versionchanged:: 0.3.0
       ``fingerprint`` (an attribute) replaces the ``identity()`` method, and ``taken`` is part of the interface.
    """

    name: str
    crs: CRS
    bounds: BBox
    res: float
    date: float
    taken: str | None
    scaling: Scaling | None
    fingerprint: tuple

    def footprint(self, crs: CRS) -> BBox:
        """Bounds of the imagery in ``crs``."""
        ...

    def read_raw(self, grid: OutputGrid) -> tuple[np.ndarray, np.ndarray]:
        """Band values (3, H, W) in the source's units and validity (H, W) on ``grid``."""
        ...

    def read(self, grid: OutputGrid) -> Patch:
        """RGB in [0, 1] and validity on ``grid`` (which may reach beyond the imagery), in new arrays the caller may change."""
        ...

    def sample(self, grid: OutputGrid, max_pixels: int = 1_000_000) -> np.ndarray:
        """Valid band values (3, N) from a decimated read of ``grid``, for region-wide statistics."""
        ...

    def close(self) -> None:
        """Release open files."""
        ...


@dataclass(frozen=True)
class ImageryOptions:
    """How to find and read imagery: bands, STAC filters, and which source wins where several overlap.

    Raises
    ------
    ImageryError
        If ``order`` is not a :class:`MosaicOrder`.
    """

    bands: tuple[int, int, int] | None = None
    collections: tuple[str, ...] = ()
    datetime: str | None = None
    asset: str | None = None
    order: MosaicOrder = MosaicOrder.FINEST

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "order", MosaicOrder(self.order))
        except ValueError:
            raise ImageryError(f"Mosaic order {self.order!r} is not one of {', '.join(MosaicOrder)}.") from None
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "collections", tuple(self.collections))
