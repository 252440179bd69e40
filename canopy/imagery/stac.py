"""Imagery behind STAC: static catalogues and collections (local or http), and STAC API searches.

Items are chosen by the region's bbox (and optionally collections and a datetime interval); from
each, the RGB asset is taken (``--asset``, else the conventional ``visual``, ``rgb``, ``image`` or
``data`` keys, else the first GeoTIFF asset). Assets are read as rasters by window, also over http.
"""

from __future__ import annotations

import logging
import time
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timezone

from canopy.errors import ImageryError, ImageryReadError
from canopy.grid import BBox, intersects

log = logging.getLogger(__name__)

DEFAULT_ASSET_KEYS = ("visual", "rgb", "image", "data")
_RETRIES = 3


@dataclass(frozen=True)
class StacQuery:
    """What to ask a catalogue for besides the bbox."""

    collections: tuple[str, ...] = ()
    datetime: str | None = None
    asset: str | None = None


@dataclass(frozen=True)
class StacAsset:
    """One raster to read: its href, the item it came from, and when it was taken (POSIX seconds)."""

    href: str
    item_id: str
    date: float


def is_stac_api(spec: str) -> bool:
    """``stac+http(s)://…/search`` names a STAC API search endpoint."""
    return str(spec).startswith(("stac+http://", "stac+https://"))


def is_stac_document(spec: str) -> bool:
    """A ``.json`` path or URL names a static STAC catalogue, collection or item."""
    return str(spec).lower().split("?", 1)[0].endswith(".json")


def _pick_asset(item, key: str | None) -> str:
    """The href of an item's RGB asset."""
    if key is not None:
        if key not in item.assets:
            raise ImageryError(f"STAC item {item.id} has no asset {key!r} (it has {', '.join(item.assets)}); pass another --asset.")
        return item.assets[key].get_absolute_href()
    for name in DEFAULT_ASSET_KEYS:
        if name in item.assets:
            return item.assets[name].get_absolute_href()
    for asset in item.assets.values():
        if (asset.media_type or "").startswith("image/tiff"):
            return asset.get_absolute_href()
    raise ImageryError(f"STAC item {item.id} has no RGB GeoTIFF asset among {', '.join(item.assets)}; pass --asset KEY.")


def _item_time(item) -> float:
    """An item's acquisition time (its datetime, else start_datetime), POSIX seconds; 0 when unknown."""
    when = item.datetime or item.common_metadata.start_datetime
    return when.timestamp() if when else 0.0


def _parse_interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    """A STAC datetime filter (``2020-01-01/2021-12-31``, ``../2021``, or one instant) as two bounds."""
    if not text:
        return None, None

    def parse(part: str, end: bool) -> datetime | None:
        if part in ("", ".."):
            return None
        if len(part) == 4:
            part = f"{part}-12-31T23:59:59" if end else f"{part}-01-01"
        value = datetime.fromisoformat(part.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    start, _, stop = text.partition("/")
    return parse(start, False), parse(stop or start, True)


def _matches(item, region: BBox | None, query: StacQuery, interval) -> bool:
    """Whether a static catalogue's item meets the bbox, collection and datetime filters."""
    if region is not None and item.bbox is not None:
        b = item.bbox
        w, s, e, n = (b[0], b[1], b[3], b[4]) if len(b) == 6 else b
        if not intersects((w, s, e, n), region):
            return False
    if query.collections and item.collection_id not in query.collections:
        return False
    start, stop = interval
    when = item.datetime or item.common_metadata.start_datetime
    if when is not None and ((start and when < start) or (stop and when > stop)):
        return False
    return True


def _retrying_stac_io():
    """A pystac reader that retries transient network failures before giving up."""
    from pystac.stac_io import DefaultStacIO

    class RetryingStacIO(DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            for attempt in range(_RETRIES):
                try:
                    return super().read_text_from_href(href)
                except Exception as exc:  # pystac wraps urllib errors in its own
                    cause = exc.__cause__ or exc
                    transient = isinstance(cause, urllib.error.URLError) and not (
                        isinstance(cause, urllib.error.HTTPError) and cause.code < 500
                    )
                    if not transient or attempt == _RETRIES - 1:
                        raise
                    log.info("retrying %s after %s", href, cause)
                    time.sleep(0.5 * 2**attempt)
            raise AssertionError("unreachable")

    return RetryingStacIO()


def assets_from_document(href: str, region: BBox | None, query: StacQuery) -> list[StacAsset]:
    """Walk a static catalogue, collection or item and return the assets over the region.

    Raises
    ------
    ImageryReadError
        If the document cannot be read (after retries for transient failures).
    ImageryError
        If no item matches, or an item has no RGB asset.
    """
    import pystac

    try:
        root = pystac.read_file(href, stac_io=_retrying_stac_io())
    except Exception as exc:
        raise ImageryReadError(f"STAC catalogue {href} could not be read ({exc}); check the path or URL.") from None
    items = [root] if isinstance(root, pystac.Item) else list(root.get_items(recursive=True))
    interval = _parse_interval(query.datetime)
    chosen = [i for i in items if _matches(i, region, query, interval)]
    if not chosen:
        raise ImageryError(f"STAC catalogue {href} has no item over the bbox{_filters(query)} ({len(items)} items in all).")
    return [StacAsset(_pick_asset(i, query.asset), i.id, _item_time(i)) for i in chosen]


def assets_from_api(spec: str, region: BBox | None, query: StacQuery, max_items: int = 10_000) -> list[StacAsset]:
    """Search a STAC API (``stac+https://…/search``) and return the assets over the region.

    Raises
    ------
    ImageryReadError
        If the API cannot be reached or answers with an error (after retries).
    ImageryError
        If the search finds nothing.
    """
    from pystac_client import ItemSearch
    from pystac_client.stac_api_io import StacApiIO

    url = spec.removeprefix("stac+")
    try:
        search = ItemSearch(
            url,
            bbox=list(region) if region is not None else None,
            collections=list(query.collections) or None,
            datetime=query.datetime,
            max_items=max_items,
            stac_io=StacApiIO(max_retries=_RETRIES, timeout=30),
        )
        items = list(search.items())
    except Exception as exc:
        raise ImageryReadError(f"STAC API {url} could not be searched ({type(exc).__name__}: {exc}); check the URL and network.") from None
    if not items:
        raise ImageryError(f"STAC API {url} found no item over the bbox{_filters(query)}.")
    return [StacAsset(_pick_asset(i, query.asset), i.id, _item_time(i)) for i in items]


def _filters(query: StacQuery) -> str:
    """The filters of a query, for messages."""
    parts = []
    if query.collections:
        parts.append(f"in {', '.join(query.collections)}")
    if query.datetime:
        parts.append(f"within {query.datetime}")
    return (" " + " ".join(parts)) if parts else ""

