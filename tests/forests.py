"""A seeded synthetic forest (canopy height in metres) for the tests of trees, stand structure and forest masks."""

from __future__ import annotations

import numpy as np
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from affine import Affine

ORIGIN = (500000.0, 4000000.0)


def synthetic_forest(size_m: float = 300.0, res: float = 0.5, seed: int = 0, density: float = 1 / 40,
                     clearing: bool = True) -> xr.DataArray:
    """Dome-shaped crowns (5-40 m tall, 0.15 h + 1 m wide) at random places, with 0.2 m noise; with
    ``clearing``, the west third is bare ground (0-0.5 m) and a corner has no data."""
    rng = np.random.default_rng(seed)
    n = int(round(size_m / res))
    chm = np.zeros((n, n), np.float32)
    for _ in range(int(size_m**2 * density)):
        x, y, h = rng.uniform(0, size_m), rng.uniform(0, size_m), rng.uniform(5, 40)
        r = 0.15 * h + 1
        r0, r1 = max(0, int((y - r) / res)), min(n, int((y + r) / res) + 1)
        c0, c1 = max(0, int((x - r) / res)), min(n, int((x + r) / res) + 1)
        yy, xx = (np.mgrid[r0:r1, c0:c1] + 0.5) * res
        d = np.hypot(xx - x, yy - y)
        chm[r0:r1, c0:c1] = np.maximum(chm[r0:r1, c0:c1], np.where(d < r, h * (1 - 0.5 * (d / r) ** 2), 0))
    chm += rng.normal(0, 0.2, chm.shape).astype(np.float32)
    chm = np.clip(chm, 0, None)
    if clearing:
        chm[:, : n // 3] = rng.uniform(0, 0.5, (n, n // 3))
        chm[: n // 10, -n // 8 :] = np.nan
    coords = {"y": ORIGIN[1] - (np.arange(n) + 0.5) * res, "x": ORIGIN[0] + (np.arange(n) + 0.5) * res}
    data = xr.DataArray(chm, dims=("y", "x"), coords=coords, name="canopy_height")
    return data.rio.write_crs("EPSG:32611").rio.write_transform(Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]))


def write_forest(path, data: xr.DataArray, nodata: float | None = float("nan")):
    """Write a synthetic forest as a float32 GeoTIFF (with ``nodata`` declared unless None) and return its path."""
    data = data.rio.write_nodata(nodata, encoded=False) if nodata is not None else data
    data.rio.to_raster(path, dtype="float32", tiled=True, blockxsize=256, blockysize=256)
    return path
