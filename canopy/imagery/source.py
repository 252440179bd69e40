"""The interface every imagery source keeps, and the mosaic of several sources on one grid."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from rasterio.crs import CRS

from canopy.errors import BBoxError, ImageryError, ImageryReadError, SkippedImageryWarning
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


MOSAIC_ORDERS = ("finest", "latest", "given")


@dataclass(frozen=True)
class ImageryOptions:
    """How to find and read imagery: bands, STAC filters, and which source wins where several overlap.

    ``order``: ``finest`` (finest resolution first, then most recent), ``latest`` (most recent
    first, then finest) or ``given`` (the order sources were named, files of a directory by path).
    """

    bands: tuple[int, int, int] | None = None
    collections: tuple[str, ...] = ()
    datetime: str | None = None
    asset: str | None = None
    order: str = "finest"

    def __post_init__(self) -> None:
        if self.order not in MOSAIC_ORDERS:
            raise ImageryError(f"Mosaic order {self.order!r} is not one of {', '.join(MOSAIC_ORDERS)}.")


def _expand(spec, region: BBox | None, options: ImageryOptions) -> list[tuple[str | os.PathLike, float | None]]:
    """The rasters one ``--imagery`` value stands for, with their dates where a catalogue gives them."""
    from canopy.imagery import stac, tile_index

    text = str(spec)
    if stac.is_stac_api(text) or stac.is_stac_document(text):
        query = stac.StacQuery(options.collections, options.datetime, options.asset)
        found = stac.assets_from_api(text, region, query) if stac.is_stac_api(text) else stac.assets_from_document(text, region, query)
        return [(a.href, a.date) for a in found]
    if tile_index.is_tile_collection(text):
        index = tile_index.build_index(text)
        for _, row in index[index["problem"].notna()].iterrows():
            warnings.warn(f"Imagery {row['path']} {row['problem']}; skipped.", SkippedImageryWarning, stacklevel=4)
        usable = tile_index.query(index, region)
        if index["problem"].notna().all():
            raise ImageryError(f"No raster in {text} is usable: each has no CRS or cannot be read (see the warnings).")
        if usable.empty:
            raise BBoxError(f"No raster in {text} intersects the bbox; `canopy index {text}` shows their extent.")
        return [(p, None) for p in usable["path"]]
    return [(spec, None)]


def open_imagery(
    sources: Sequence[str | os.PathLike | ImagerySource],
    region: BBox | None = None,
    options: ImageryOptions | None = None,
) -> list[ImagerySource]:
    """Open every raster the named imagery stands for, in mosaic priority order.

    Parameters
    ----------
    sources
        GeoTIFF paths or URLs (remote COGs), directories or glob patterns of GeoTIFFs (indexed
        and cached), static STAC catalogues/collections/items (``.json`` paths or URLs), STAC API
        searches (``stac+https://…/search``), or objects keeping the :class:`ImagerySource` interface.
    region
        The bbox in EPSG:4326 used to pick tiles and STAC items; None takes all.
    options
        Bands, STAC filters and mosaic order.

    Returns
    -------
    list of ImagerySource
        Highest priority first.

    Raises
    ------
    ImageryReadError
        If a path does not exist or is not a raster, a directory holds no raster, or a catalogue
        cannot be reached.
    ImageryError
        If a raster has no georeferencing or too few bands, or a catalogue finds nothing.
    BBoxError
        If no tile of a directory intersects the region.
    """
    from canopy.imagery.geotiff import GeoTiffSource, merge_aligned

    options = options or ImageryOptions()
    if not sources:
        raise ImageryReadError("No imagery given; pass at least one --imagery GeoTIFF, directory or catalogue.")
    opened: list[ImagerySource] = []
    try:
        for source in sources:
            if isinstance(source, ImagerySource):
                opened.append(source)
                continue
            for path, date in _expand(source, region, options):
                opened.append(GeoTiffSource(path, bands=options.bands, date=date))
    except BaseException:
        for source in opened:
            source.close()
        raise
    if options.order == "finest":
        opened.sort(key=lambda s: (round(s.res, 9), -getattr(s, "date", 0.0)))
    elif options.order == "latest":
        opened.sort(key=lambda s: (-getattr(s, "date", 0.0), round(s.res, 9)))
    return merge_aligned(opened)


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
