"""From what the user names (files, URLs, folders, globs, STAC) to opened sources in mosaic priority order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from canopy.errors import BBoxError, ImageryError, ImageryReadError, SkippedImageryWarning, warn
from canopy.grid import BBox
from canopy.imagery import stac, tile_index
from canopy.imagery.geotiff import GeoTiffSource
from canopy.imagery.mosaic import merge_aligned
from canopy.choices import MosaicOrder
from canopy.imagery.source import ImageryOptions, ImagerySource
from canopy.imagery.source_set import SourceObject, SourceSet


def _expand(spec, region: BBox | None, options: ImageryOptions) -> list[tuple[str | os.PathLike, float | None]]:
    """The rasters one ``--imagery`` value stands for, with their dates where a catalogue gives them."""
    text = str(spec)
    if stac.is_stac_api(text) or stac.is_stac_document(text):
        query = stac.StacQuery(options.collections, options.datetime, options.asset)
        found = stac.assets_from_api(text, region, query) if stac.is_stac_api(text) else stac.assets_from_document(text, region, query)
        return [(a.href, a.date) for a in found]
    if tile_index.is_tile_collection(text):
        index = tile_index.build_index(text)
        skipped = index[index["problem"].notna()]
        if len(skipped):
            listed = "; ".join(f"{Path(p).name} {problem}" for p, problem in zip(skipped["path"][:5], skipped["problem"][:5]))
            more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            warn(f"Imagery {text}: skipped {len(skipped)} of {len(index)} rasters that are not usable RGB imagery "
                          f"({listed}{more}); `canopy index {text}` lists them.", SkippedImageryWarning)
        usable = tile_index.query(index, region)
        if index["problem"].notna().all():
            raise ImageryError(f"No raster in {text} is usable RGB imagery: each has no CRS, fewer than 3 bands or cannot be read (see the warning).")
        if usable.empty:
            raise BBoxError(f"No raster in {text} intersects the bbox; `canopy index {text}` shows their extent.")
        return [(p, None) for p in usable["path"]]
    return [(spec, None)]


def open_imagery(
    sources: Sequence[str | os.PathLike | ImagerySource],
    region: BBox | None = None,
    options: ImageryOptions | None = None,
) -> SourceSet:
    """Open every raster the named imagery stands for, in mosaic priority order.

    Each raster is checked as it opens (georeferencing, bands, a readable last block), once: the
    set's records open it again elsewhere without checking again.

    Parameters
    ----------
    sources
        GeoTIFF paths or URLs (remote COGs), directories or glob patterns of GeoTIFFs (indexed
        and cached), static STAC catalogues/collections/items (``.json`` paths or URLs), STAC API
        searches (``stac+https://…/search``), or objects keeping the :class:`ImagerySource`
        interface (a :class:`GeoTiffSource` is opened again from its record; other objects are used
        as they are and never closed here).
    region
        The bbox in EPSG:4326 used to pick tiles and STAC items; None takes all.
    options
        Bands, STAC filters and mosaic order.

    Returns
    -------
    SourceSet
        Open (close it, or use it as a context manager), highest priority first; aligned
        neighbouring GeoTIFFs joined into one mosaic source.

    Raises
    ------
    ImageryReadError
        If a path does not exist or is not a raster, a directory holds no raster, or a catalogue
        cannot be reached.
    ImageryError
        If a raster has no georeferencing or too few bands, or a catalogue finds nothing.
    BBoxError
        If no tile of a directory intersects the region.

    .. versionchanged:: 0.3.0
       Returns a :class:`~canopy.imagery.source_set.SourceSet`, not a list.
    """
    options = options or ImageryOptions()
    if not sources:
        raise ImageryReadError("No imagery given; pass at least one --imagery GeoTIFF, directory or catalogue.")
    opened: list[ImagerySource] = []
    with ExitStack() as stack:
        for source in sources:
            if isinstance(source, GeoTiffSource):
                opened.append(stack.enter_context(source.ref.open()))
            elif isinstance(source, ImagerySource):
                opened.append(source)
            else:
                opened.extend(stack.enter_context(GeoTiffSource(path, bands=options.bands, date=date))
                              for path, date in _expand(source, region, options))
        if options.order == MosaicOrder.FINEST:
            opened.sort(key=lambda s: (round(s.res, 9), -s.date))
        elif options.order == MosaicOrder.LATEST:
            opened.sort(key=lambda s: (-s.date, round(s.res, 9)))
        opened = merge_aligned(opened)
        closer = stack.pop_all()
    for source in opened:
        if isinstance(source, GeoTiffSource):
            closer.callback(source.close)  # mosaics are new objects; closing a source twice is harmless
    records = [s.ref if isinstance(s, GeoTiffSource) else SourceObject(s) for s in opened]
    return SourceSet(records, (opened, closer))
