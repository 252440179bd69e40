"""Canopy height models at a finer pixel from the bundled plots' lidar point clouds, for scoring tree detection.

The 1 m CHMs in ``canopy/data/neon`` keep the highest return per 1 m cell, so a crown of 3 m spans
three pixels. This script makes the same kind of CHM at a finer pixel (default 0.5 m) from the plots'
LAZ files (about 5 points per m², in ``../shared/data/neon``):

- surface: the highest non-noise return (class 7 left out) in each cell;
- terrain: ground returns (class 2) interpolated linearly over a triangulation (nearest ground
  return outside their hull);
- height = surface - terrain, floored at 0; cells without a return take the mean of their valid
  neighbours, up to five cells away.

It needs ``laspy`` and ``lazrs`` (``pip install laspy lazrs``), which canopy itself does not; the
results are bundled as ``canopy/data/neon/<plot>_chm_0.5m.tif``.

    python benchmarks/lidar_chm.py ../shared/data/neon canopy/data/neon [--res 0.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage
from scipy.interpolate import griddata

NOISE, GROUND = 7, 2


def point_cloud_chm(laz: Path, grid_of: Path, res: float) -> tuple[np.ndarray, dict]:
    """The CHM of one plot's point cloud on a grid of ``res`` over the extent of the raster ``grid_of``."""
    import laspy

    points = laspy.read(laz)
    x, y, z = np.asarray(points.x), np.asarray(points.y), np.asarray(points.z)
    kind = np.asarray(points.classification)
    with rasterio.open(grid_of) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    width, height = int(round((right - left) / res)), int(round((top - bottom) / res))
    cols, rows = ((x - left) / res).astype(int), ((top - y) / res).astype(int)
    kept = (kind != NOISE) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    surface = np.full((height, width), -np.inf)
    np.maximum.at(surface, (rows[kept], cols[kept]), z[kept])
    cy, cx = (np.mgrid[0:height, 0:width] + 0.5) * res
    centres = (left + cx, top - cy)
    ground = kind == GROUND
    xy = np.column_stack([x[ground], y[ground]])
    terrain = griddata(xy, z[ground], centres, method="linear")
    terrain = np.where(np.isnan(terrain), griddata(xy, z[ground], centres, method="nearest"), terrain)
    chm = surface - terrain
    empty = ~np.isfinite(chm)
    for _ in range(5):
        if not empty.any():
            break
        values = ndimage.uniform_filter(np.where(empty, 0.0, chm), 3, mode="nearest")
        weights = ndimage.uniform_filter((~empty).astype(float), 3, mode="nearest")
        filled = empty & (weights > 0)
        chm = np.where(filled, values / np.maximum(weights, 1e-12), chm)
        empty &= ~filled
    chm = np.clip(np.where(np.isfinite(chm), chm, 0.0), 0.0, None).astype(np.float32)
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="float32", crs=crs, nodata=-9999.0,
                   transform=rasterio.Affine(res, 0, left, 0, -res, top), compress="deflate", predictor=3)
    return chm, profile


def main() -> None:
    """Write a finer CHM for every plot that has a point cloud and a 1 m CHM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with <plot>.laz and <plot>_chm_1m.tif")
    parser.add_argument("target", type=Path)
    parser.add_argument("--res", type=float, default=0.5)
    args = parser.parse_args()
    for laz in sorted(args.source.glob("*.laz")):
        chm, profile = point_cloud_chm(laz, args.source / f"{laz.stem}_chm_1m.tif", args.res)
        out = args.target / f"{laz.stem}_chm_{args.res:g}m.tif"
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(chm, 1)
        print(f"wrote {out} ({chm.shape[1]} x {chm.shape[0]} px, {np.percentile(chm, 99):.1f} m at the 99th percentile)")


if __name__ == "__main__":
    main()
