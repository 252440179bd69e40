"""Trees per second and peak memory of ``canopy trees`` on a large synthetic canopy height map.

Writes a seeded forest of dome-shaped crowns (default 10000 x 10000 px at 0.5 m: 100 Mpx, 25 km²)
as a tiled float32 GeoTIFF, then runs the tree detection into a GeoPackage in a fresh process,
timed from after its imports, and prints trees, seconds, trees per second, Mpx per second and
the process's peak resident memory.

    python benchmarks/tree_throughput.py [--size 10000] [--block-size 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import PEAK, child_figures  # noqa: E402
from predict_throughput import machine_record  # noqa: E402

RUN = PEAK + """
import json, sys, time
from canopy.analysis.trees import write_trees
chm, out, block_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
trees = write_trees(chm, out, block_size=block_size)
seconds = time.perf_counter() - start
print(json.dumps({"trees": trees, "seconds": seconds, "peak_mb": peak_rss_mb()}))
"""

_TILE = 1000  # the forest is drawn tile by tile, crowns straddling tiles included, so memory stays small


def make_forest(path: Path, size: int, res: float = 0.5, seed: int = 0) -> None:
    """A seeded forest of domes (5-40 m tall, 0.15 h + 1 m wide, one per 40 m²) with 0.2 m noise."""
    rng = np.random.default_rng(seed)
    extent = size * res
    count = int(extent**2 / 40)
    x, y, h = rng.uniform(0, extent, count), rng.uniform(0, extent, count), rng.uniform(5, 40, count)
    radius = 0.15 * h + 1
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32", nodata=float("nan"), crs="EPSG:32611",
                   transform=Affine(res, 0, 500000.0, 0, -res, 4000000.0), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", predictor=3, BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, _TILE):
            for col in range(0, size, _TILE):
                top, left = row * res, col * res
                near = (x + radius > left) & (x - radius < left + _TILE * res) & (y + radius > top) & (y - radius < top + _TILE * res)
                yy, xx = (np.mgrid[0:_TILE, 0:_TILE] + 0.5) * res
                yy, xx = yy + top, xx + left
                tile = rng.normal(0, 0.2, (_TILE, _TILE)).astype(np.float32)
                for cx, cy, ch, cr in zip(x[near], y[near], h[near], radius[near]):
                    r0, r1 = max(0, int((cy - cr - top) / res)), min(_TILE, int((cy + cr - top) / res) + 1)
                    c0, c1 = max(0, int((cx - cr - left) / res)), min(_TILE, int((cx + cr - left) / res) + 1)
                    d = np.hypot(xx[r0:r1, c0:c1] - cx, yy[r0:r1, c0:c1] - cy)
                    dome = np.where(d < cr, ch * (1 - 0.5 * (d / cr) ** 2), 0).astype(np.float32)
                    tile[r0:r1, c0:c1] = np.maximum(tile[r0:r1, c0:c1], dome)
                dst.write(np.clip(tile, 0, None)[None], window=Window(col, row, _TILE, _TILE))


def main() -> None:
    """Make the forest, run the trees in a fresh process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--block-size", type=int, default=2048)
    args = parser.parse_args()
    print(json.dumps(machine_record()))
    with tempfile.TemporaryDirectory() as tmp:
        chm = Path(tmp) / "forest.tif"
        make_forest(chm, args.size)
        result = child_figures([sys.executable, "-c", RUN, str(chm), str(Path(tmp) / "trees.gpkg"), str(args.block_size)])
    mpx = args.size**2 / 1e6
    print(f"{mpx:.0f} Mpx at 0.5 m, blocks of {args.block_size} px: {result['trees']} trees in {result['seconds']:.1f} s "
          f"({result['trees'] / result['seconds']:.0f} trees/s, {mpx / result['seconds']:.2f} Mpx/s), peak memory {result['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
