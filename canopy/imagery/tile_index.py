"""Tile indexes of directories (or globs) of GeoTIFFs, cached as GeoParquet and refreshed incrementally.

An index row per file records its footprint (EPSG:4326 polygon), CRS, resolution, band count, data
type, nodata, size and modification time. The cache lives in ``<cache>/indexes/`` (the imagery
folder may be read-only); a later use rescans only files that are new or whose size or
modification time changed, and drops files that are gone.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import transform_bounds
from shapely.geometry import box

from canopy.cache import cache_dir
from canopy.errors import ImageryReadError
from canopy.grid import BBox
from canopy.io.atomic import atomic_path

log = logging.getLogger(__name__)

_SUFFIXES = (".tif", ".tiff")
COLUMNS = ["path", "crs", "res", "count", "dtype", "nodata", "size", "mtime_ns", "problem", "geometry"]


def is_tile_collection(spec: str | os.PathLike) -> bool:
    """Whether an ``--imagery`` value names a directory or a glob pattern of rasters."""
    text = str(spec)
    return Path(text).is_dir() or any(ch in text for ch in "*?[")


def list_rasters(spec: str | os.PathLike) -> list[Path]:
    """The GeoTIFFs of a directory (recursively) or of a glob pattern, sorted by path."""
    text = str(spec)
    if Path(text).is_dir():
        found = [p for p in Path(text).rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file()]
    else:
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in _SUFFIXES]
    return sorted(p.resolve() for p in found if not p.name.startswith("."))


def index_path(spec: str | os.PathLike) -> Path:
    """Where the index of a directory or glob is cached."""
    text = str(Path(spec).resolve()) if Path(str(spec)).is_dir() else os.path.abspath(str(spec))
    return cache_dir() / "indexes" / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.parquet"


def _scan(path: Path, stat: os.stat_result) -> dict:
    """One index row, read from the file's header."""
    row = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "crs": None, "res": None,
           "count": None, "dtype": None, "nodata": None, "problem": None, "geometry": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                row.update(count=ds.count, dtype=ds.dtypes[0], nodata=ds.nodata, res=float(min(map(abs, ds.res))))
                if ds.crs is None or ds.transform.is_identity:
                    row["problem"] = "has no CRS or geotransform"
                else:
                    row["crs"] = ds.crs.to_wkt()
                    row["geometry"] = box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))
    except RasterioIOError:
        row["problem"] = "is not a raster GDAL can read"
    return row


def build_index(spec: str | os.PathLike) -> gpd.GeoDataFrame:
    """The index of a directory or glob, from the cache where files are unchanged.

    Parameters
    ----------
    spec
        A directory (searched recursively) or a glob pattern.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per file, in EPSG:4326; ``problem`` says why a file cannot be used (unreadable,
        no CRS, fewer than three bands, as lidar canopy height models have).

    Raises
    ------
    ImageryReadError
        If the directory or pattern holds no GeoTIFF.
    """
    files = list_rasters(spec)
    if not files:
        raise ImageryReadError(f"{spec} holds no GeoTIFF (.tif or .tiff); check the directory or pattern.")
    cache = index_path(spec)
    cached: dict[str, dict] = {}
    if cache.is_file():
        try:
            cached = {row["path"]: row for row in gpd.read_parquet(cache).to_dict("records")}
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable tile index %s (%s)", cache, exc)
    rows, rescanned = [], 0
    for path in files:
        stat = path.stat()
        old = cached.get(str(path))
        if old is not None and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
            rows.append(old)
        else:
            rows.append(_scan(path, stat))
            rescanned += 1
    index = gpd.GeoDataFrame(pd.DataFrame(rows, columns=COLUMNS), geometry="geometry", crs="EPSG:4326")
    too_few = index["problem"].isna() & (index["count"] < 3)  # also in indexes cached before this rule
    index.loc[too_few, "problem"] = index.loc[too_few, "count"].map(lambda n: f"has {int(n)} band(s), not RGB")
    if rescanned or len(cached) != len(rows):
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            index.to_parquet(tmp)
    log.info("tile index of %s: %d files, %d rescanned (%s)", spec, len(rows), rescanned, cache)
    index.attrs["rescanned"] = rescanned
    return index


def query(index: gpd.GeoDataFrame, region: BBox | None) -> gpd.GeoDataFrame:
    """Usable rows whose footprint intersects ``region`` (EPSG:4326), or all usable rows without one."""
    usable = index[index["problem"].isna()]
    if region is None:
        return usable
    return usable[usable.intersects(box(*region))]


def summary(index: gpd.GeoDataFrame) -> str:
    """A few lines describing an index, for ``canopy index``."""
    usable = index[index["problem"].isna()]
    lines = [f"{len(index)} files, {len(usable)} usable"]
    for _, row in index[index["problem"].notna()].iterrows():
        lines.append(f"  skipped {row['path']}: {row['problem']}")
    if len(usable):
        crss = usable["crs"].map(lambda w: rasterio.crs.CRS.from_wkt(w).to_string()).value_counts()
        lines.append("CRS: " + ", ".join(f"{name} ({n})" for name, n in crss.items()))
        lines.append(f"resolution: {usable['res'].min():g} to {usable['res'].max():g} (CRS units)")
        lines.append("data types: " + ", ".join(sorted(set(usable["dtype"]))) + "; bands: " + ", ".join(str(c) for c in sorted(set(usable["count"]))))
        w, s, e, n = usable.total_bounds
        lines.append(f"extent (EPSG:4326): {w:.6f},{s:.6f},{e:.6f},{n:.6f}")
    return "\n".join(lines)
