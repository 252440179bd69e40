"""Seeded generators of small test rasters in several CRSs, plus broken files, and in-memory sources."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
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
