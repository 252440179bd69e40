"""Time reading every block of a run (imagery warped onto the output grid, as predict reads it), without the model.

A seeded 2400 x 2400 px RGB raster at 0.1 m is read at 0.13 m in its own CRS and reprojected to the
next UTM zone, with 224 px chips, in small and large blocks. To compare two versions of canopy side by
side (A B A B), run the script alternately with ``PYTHONPATH`` pointing at each checkout.

    python benchmarks/read_throughput.py [--label after] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def _raster(folder: Path) -> Path:
    """The seeded test raster."""
    path = folder / "imagery.tif"
    data = np.random.default_rng(0).integers(0, 250, (3, 2400, 2400)).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=2400, height=2400, count=3, dtype="uint8", crs="EPSG:32611",
                       transform=Affine(0.1, 0, 321000.0, 0, -0.1, 4097000.0), tiled=True) as dst:
        dst.write(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="canopy")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from canopy.request import PredictRequest
    from canopy.runtime.plan import make_plan
    from canopy.tiling.block_input import read_block

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        imagery = _raster(Path(tmp))
        for _ in range(args.repeat):
            for crs in (None, "EPSG:32610"):
                for block_size in (196, 980):
                    request = PredictRequest.from_options(imagery, model="dinov2_vits14", weights="random", res=0.13,
                                                          block_size=block_size, chip_size=224, overlap=56, crs=crs)
                    with make_plan(request) as plan:
                        sources = plan.sources.open()
                        start = time.perf_counter()
                        for block in plan.blocks():
                            read_block(sources, plan.grid, block, plan.layout, np.zeros(3, np.float32))
                        seconds = time.perf_counter() - start
                    where = "own CRS" if crs is None else f"to {crs}"
                    print(f"{args.label}: {plan.grid.width} x {plan.grid.height} px {where}, blocks of {plan.block_size} px: "
                          f"{seconds:.2f} s ({plan.grid.width * plan.grid.height / seconds / 1e6:.1f} Mpx/s)", flush=True)


if __name__ == "__main__":
    main()
