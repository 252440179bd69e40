"""What is decided once about a raster, when it is first opened: the driver it may be opened with, its VRT's
sources, that it is georeferenced and not truncated, its bands, what its nodata means, and its fingerprint.

A raster's record (:class:`~canopy.imagery.geotiff.RasterRef`) carries these answers, so a process
that opens it again (a Dask worker) reads it without deciding anything again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from canopy.errors import AmbiguousNodataWarning, ImageryError, ImageryReadError, warn
from canopy.grid import to_crs

_REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://")  # GDAL's /vsi paths are refused: remote means a URL
# A block (tile or strip) larger than this is refused rather than read: GDAL would allocate it whole.
_MAX_BLOCK_PIXELS = 64 * 2**20


def frozen(value):
    """Lists as tuples, all the way down, so a fingerprint compares and hashes alike wherever it was made."""
    return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def is_remote(path: str | os.PathLike) -> bool:
    """Whether a path is a URL, read by ranges rather than from disk."""
    return str(path).startswith(_REMOTE_PREFIXES)


def date_span(taken: Sequence[str | None]) -> str | None:
    """The ISO dates of several rasters as one (a day, or ``first/last``); None when any is not known."""
    if not taken or not all(taken):
        return None
    days = sorted({day for text in taken for day in text.split("/")})
    return days[0] if len(days) == 1 else f"{days[0]}/{days[-1]}"


def tiff_datetime(text: str | None) -> datetime | None:
    """A TIFF ``DATETIME`` tag (``YYYY:MM:DD HH:MM:SS``) as a UTC datetime; None when absent or malformed."""
    try:
        return datetime.strptime(text.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=timezone.utc) if text else None
    except ValueError:
        return None


def gdal_message(exc: BaseException) -> str:
    """GDAL's own words for a failure: rasterio's "Read failed. See previous exception" hides them in the chain."""
    messages, seen = [], exc
    while seen is not None and len(messages) < 8:
        text = str(seen).strip()
        if text and "See previous exception" not in text and text not in messages:
            messages.append(text)
        seen = seen.__cause__ or seen.__context__
    return "; ".join(messages[-2:]) if messages else type(exc).__name__


def local_path(path: str | os.PathLike) -> str | os.PathLike:
    """A ``file://`` URL as the local path it names; anything else as it is."""
    text = str(path)
    if not text.startswith("file://"):
        return path
    return url2pathname(urlparse(text).path)


def driver_for(path: str | Path) -> str:
    """The one GDAL driver user imagery may be opened with, from its name: GeoTIFF, or VRT for a ``.vrt`` the user named.

    Raises
    ------
    ImageryError
        For a GDAL virtual path (remote imagery must be given as a URL) or a file that is neither.
    """
    text = str(path)
    if is_remote(text):
        return "GTiff"
    if text.startswith("/vsi"):
        raise ImageryError(f"Imagery {text} is a GDAL virtual path; give remote imagery as its URL (https://, s3://, gs://).")
    suffix = Path(text).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return "GTiff"
    if suffix == ".vrt":
        return "VRT"
    raise ImageryError(f"Imagery {text} is neither a GeoTIFF (.tif, .tiff) nor a VRT mosaic (.vrt); convert it with gdal_translate.")


def check_vrt_sources(vrt: Path) -> None:
    """Refuse a VRT whose sources are not GeoTIFFs named as such, or remote other than by /vsicurl/ http(s) URLs.

    Raises
    ------
    ImageryError, ImageryReadError
        Naming the VRT and the source.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(vrt).getroot()
    except ET.ParseError as exc:
        raise ImageryReadError(f"Imagery {vrt} is not a VRT document ({exc}).") from None
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if name.startswith(("/vsicurl/http://", "/vsicurl/https://")):
            continue
        source = vrt.parent / name if element.get("relativeToVRT") == "1" else Path(name)
        if name.startswith("/vsi") or source.suffix.lower() not in (".tif", ".tiff"):
            raise ImageryError(f"Imagery {vrt} has source {name}, which is not a GeoTIFF (.tif) or an http(s) URL; canopy reads only those.")
        if not source.is_file():
            raise ImageryReadError(f"Imagery {vrt} has source {name}, which does not exist; check the VRT.")
        try:
            rasterio.open(source, driver="GTiff").close()
        except RasterioIOError:
            raise ImageryError(f"Imagery {vrt} has source {name}, which is not a GeoTIFF although named so.") from None


def file_fingerprint(path: str | Path | None) -> list:
    """Path, size and modification time of a local file; the URL of a remote one."""
    if isinstance(path, Path):
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]
    return [str(path)]


def check_raster(ds: rasterio.DatasetReader, label: str, read_last_block: bool) -> None:
    """Refuse rasters canopy cannot place on a map or read as RGB, and (``read_last_block``) truncated files.

    Raises
    ------
    ImageryError, ImageryReadError
        In one sentence naming the raster (``label``).
    """
    if ds.crs is None:
        raise ImageryError(f"Imagery {label} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32611).")
    if ds.transform.is_identity or ds.transform.b or ds.transform.d:
        what = "no geotransform" if ds.transform.is_identity else "a rotated geotransform"
        raise ImageryError(f"Imagery {label} has {what}; georeference it north-up (e.g. gdalwarp) first.")
    if ds.count < 3:
        raise ImageryError(f"Imagery {label} has {ds.count} band(s); canopy needs RGB imagery with at least 3 bands.")
    if not (ds.crs.is_projected or ds.crs.is_geographic):
        raise ImageryError(
            f"Imagery {label} is in a local (engineering) CRS that cannot be placed on the Earth; "
            "assign its real CRS (e.g. gdal_edit.py -a_srs EPSG:32611)."
        )
    try:
        lonlat = to_crs(tuple(ds.bounds), ds.crs, CRS.from_epsg(4326))
    except Exception:  # PROJ's failures come as GDAL's CPLE errors, which are no RasterioError
        lonlat = (math.inf,) * 4
    if not all(math.isfinite(v) for v in lonlat):
        raise ImageryError(
            f"Imagery {label} has a CRS or extent that cannot be placed in longitude and latitude; "
            "check its georeferencing (gdalinfo) and assign a standard CRS."
        )
    block_rows, block_cols = ds.block_shapes[0]
    if block_rows * block_cols > _MAX_BLOCK_PIXELS:
        raise ImageryError(
            f"Imagery {label} is stored in blocks of {block_cols} x {block_rows} px, too large to read by windows; "
            "rewrite it tiled (gdal_translate -co TILED=YES)."
        )
    if not read_last_block:
        return
    try:
        last = Window(0, max(0, ds.height - block_rows), min(ds.width, block_cols), min(ds.height, block_rows))
        ds.read(1, window=last)
    except RasterioError as exc:
        raise truncated(label, exc) from exc


def truncated(label: str, exc: BaseException) -> ImageryReadError:
    """The error for a file whose reads fail near its start or end, with GDAL's words."""
    return ImageryReadError(f"Imagery {label} cannot be read to its end; it may be truncated (GDAL: {gdal_message(exc)}).")


def select_bands(ds: rasterio.DatasetReader, bands: Sequence[int] | None, label: str) -> list[int]:
    """Band indexes of red, green and blue: as given, else by colour interpretation, else the first three."""
    count = ds.count
    if bands is not None:
        bands = list(bands)
        if len(bands) != 3 or not all(1 <= b <= count for b in bands):
            raise ImageryError(f"Bands {bands} do not name three of the {count} bands of {label}; pass e.g. --bands 1,2,3.")
        return bands
    interp = list(ds.colorinterp)
    wanted = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in interp for c in wanted):
        return [interp.index(c) + 1 for c in wanted]
    return [1, 2, 3]


def decide_nodata_rule(ds: rasterio.DatasetReader, bands: Sequence[int], name: str, label: str) -> str:
    """Decide whether a declared nodata of 255 in 8-bit imagery marks missing data or saturated pixels.

    255 is also the value of a saturated pixel (the NEON orthophotos declare it as nodata and
    hold real white pixels of 255). When the image's top and bottom rows are mostly all-255 it
    has a nodata collar: 255 is masked where connected to it, and enclosed 255 pixels are read
    as (saturated) data. Otherwise 255 is read as data everywhere. A warning says which rule applies.
    Returns ``collar``, ``data``, or ``plain`` when the question does not arise.
    """
    if ds.nodata is None or ds.nodata != 255 or ds.dtypes[bands[0] - 1] != "uint8":
        return "plain"
    rows = [Window(0, 0, ds.width, 1), Window(0, ds.height - 1, ds.width, 1)]
    try:
        edges = np.concatenate([ds.read(list(bands), window=w).reshape(3, -1) for w in rows], axis=1)
    except RasterioError as exc:
        raise truncated(label, exc) from exc
    if (edges == 255).all(axis=0).mean() >= 0.5:
        warn(
            f"Imagery {name} declares nodata=255, which is also a saturated pixel value, and has a collar of "
            "255: canopy masks 255 where it is connected to the collar and reads enclosed pixels of 255 as data.",
            AmbiguousNodataWarning,
        )
        return "collar"
    warn(
        f"Imagery {name} declares nodata=255, which is also a saturated pixel value, and its edges hold "
        "image data: canopy reads pixels of 255 as data, not as nodata.",
        AmbiguousNodataWarning,
    )
    return "data"
