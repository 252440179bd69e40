"""Seeded generators of small test rasters in several CRSs, plus broken files, and in-memory sources."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

NEON = Path(__file__).resolve().parents[1] / "canopy" / "data" / "neon"


def write_raster(
    path: Path,
    *,
    crs: str | None = "EPSG:32611",
    transform: Affine | None = Affine(0.5, 0, 321000.0, 0, -0.5, 4097000.0),
    width: int = 64,
    height: int = 48,
    count: int = 3,
    dtype: str = "uint8",
    nodata: float | None = None,
    seed: int = 0,
    data: np.ndarray | None = None,
) -> Path:
    """Write a seeded random (or given) raster and return its path."""
    if data is None:
        rng = np.random.default_rng(seed)
        data = rng.integers(0, 250, size=(count, height, width)).astype(dtype)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype}
    if crs is not None:
        profile["crs"] = CRS.from_user_input(crs)
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # rasters without a transform are made on purpose
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB field (uint8), so resampling changes values only a little."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    bands = []
    for _ in range(3):
        a, b, c = rng.uniform(1, 4, 3)
        bands.append(127 + 100 * np.sin(a * xx * np.pi + c) * np.cos(b * yy * np.pi))
    return np.clip(np.stack(bands), 0, 254).astype("uint8")


def cut_tiles(source: Path, out_dir: Path, per_side: int = 2, driver: str = "GTiff") -> list[Path]:
    """Cut a raster into per_side x per_side tiles with its georeferencing; return their paths."""
    from rasterio.windows import Window

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(source) as src:
        th, tw = src.height // per_side, src.width // per_side
        for i in range(per_side):
            for j in range(per_side):
                window = Window(j * tw, i * th, tw, th)
                profile = {**src.profile, "width": tw, "height": th, "transform": src.window_transform(window)}
                profile.pop("blockysize", None), profile.pop("blockxsize", None), profile.pop("tiled", None)
                path = out_dir / f"tile_{i}_{j}.tif"
                data = src.read(window=window)
                if driver == "COG":
                    tmp = out_dir / f".tmp_{i}_{j}.tif"
                    with rasterio.open(tmp, "w", **profile) as dst:
                        dst.write(data)
                        dst.colorinterp = src.colorinterp
                    rasterio.shutil.copy(tmp, path, driver="COG", BLOCKSIZE=256)
                    tmp.unlink()
                else:
                    with rasterio.open(path, "w", **profile) as dst:
                        dst.write(data)
                        dst.colorinterp = src.colorinterp
                paths.append(path)
    return paths


def reproject_raster(source: Path, target: Path, crs: str) -> Path:
    """Warp an RGB raster to another CRS at about the same resolution (bilinear), as ``gdalwarp -dstalpha``
    does: the collar outside the source is marked by an alpha band, not by a nodata value."""
    from rasterio.enums import ColorInterp
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
        profile = {**src.profile, "crs": crs, "transform": transform, "width": width, "height": height, "count": 4, "nodata": None}
        alpha = np.zeros((height, width), np.uint8)
        reproject(np.full((src.height, src.width), 255, np.uint8), alpha, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs=crs, resampling=Resampling.nearest, dst_nodata=0)
        with rasterio.open(target, "w", **profile) as dst:
            for band in range(1, 4):
                out = np.zeros((height, width), np.uint8)
                reproject(rasterio.band(src, band), out, dst_transform=transform, dst_crs=crs,
                          resampling=Resampling.bilinear, src_nodata=None)
                dst.write(out, band)
            dst.write(alpha, 4)
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return target
