"""Peak memory depends on the block size, not on the region: predict and each analysis over a region 4x larger
peak within 1.1x, measured in a child process (its own high-water mark, VmHWM).

GDAL's block cache, a bounded constant that a run holds to 256 MB, is held to 16 MB here, so that what
would grow with the region (a whole raster read, an output or its rows kept) stands out: holding the
larger region's map would add 64 MB, over 15 % of a run's peak. predict runs a model that costs nothing
(heights from the green band), so that the pipeline's memory is measured, not the network's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from forests import synthetic_forest

from canopy.calibration import Calibration

_CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from canopy.models.height_model import LoadedModel
from canopy.models.registry import get_model_spec
import canopy.runtime.block_worker as block_worker


class Green(torch.nn.Module):
    def forward(self, x):
        return x[:, 1:2] * 30.0


block_worker.load_height_model = lambda *a, **k: LoadedModel(Green(), get_model_spec("dinov2_vits14"), "free", "free")
from canopy.cli.main import cli

cli.main(sys.argv[1:], standalone_mode=False)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": peak / 1024}))
"""

SIZE = 2048
"""The smaller region's side in pixels; the larger one's is twice that."""


def _tile(path: Path, size: int, patch: np.ndarray, res: float, bands: int = 1, harvest: bool = False) -> Path:
    """A size x size raster at ``res`` m repeating ``patch`` (bands, n, n), written window by window; with
    ``harvest``, the crowns of the 512 x 512 px in its north-west corner cut to 1 m (the same harvest at every size:
    one loss polygon is an output row, held whole while its pieces are dissolved, so a harvest that grew with the
    map would grow the peak by its own geometry, about 40 MB for a quarter of the larger map)."""
    n = patch.shape[-1]
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype=patch.dtype.name, crs="EPSG:32611",
                   transform=Affine(res, 0, 500000.0, 0, -res, 4000000.0), tiled=True, blockxsize=256, blockysize=256,
                   nodata=float("nan") if patch.dtype == np.float32 else None)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, n):
            for col in range(0, size, n):
                window = Window(col, row, min(n, size - col), min(n, size - row))
                part = patch[:, : window.height, : window.width]
                if harvest and row < 512 and col < 512:
                    part = np.minimum(part, 1.0)
                dst.write(part, window=window)
    return path


def _peak_mb(args: list[str]) -> float:
    env = {**os.environ, "CANOPY_OFFLINE": "1", "GDAL_CACHEMAX": "16"}
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    """For each side, an RGB scene (0.5 m), a forest's heights (1 m), the same forest after a harvest, and a sparse
    forest (one tree in 200 m², so that finding trees takes seconds)."""
    folder = tmp_path_factory.mktemp("regions")
    forest = synthetic_forest(size_m=256, res=1.0, clearing=False).values[None].astype(np.float32)
    sparse = synthetic_forest(size_m=256, res=1.0, density=1 / 200, clearing=False).values[None].astype(np.float32)
    yy, xx = np.mgrid[0:256, 0:256] / 23.0
    rgb = np.clip(120 + 60 * np.sin(xx) * np.cos(yy) + np.random.default_rng(0).normal(0, 12, (3, 256, 256)), 0, 254)
    calibration = folder / "calibration.json"  # for maps canopy did not make (no model in their tags)
    Calibration("unknown", "unknown", "unknown", ((0.0, 0.5), (40.0, 38.0)), 1000, (0.0, 40.0), "2026-12-06").write(calibration)
    made = {}
    for size in (SIZE, 2 * SIZE):
        made[size] = {"rgb": _tile(folder / f"rgb_{size}.tif", size, rgb.astype(np.uint8), 0.5, bands=3),
                      "chm": _tile(folder / f"chm_{size}.tif", size, forest, 1.0),
                      "sparse": _tile(folder / f"sparse_{size}.tif", size, sparse, 1.0),
                      "after": _tile(folder / f"after_{size}.tif", size, forest, 1.0, harvest=True),
                      "calibration": calibration}
    return made


def _commands(inputs: dict[str, Path], out: Path) -> dict[str, list[str]]:
    return {
        "predict": ["predict", "--imagery", str(inputs["rgb"]), "--model", "dinov2_vits14", "--weights", "random", "--res", "0.5",
                    "--chip-size", "224", "--block-size", "512", "--device", "cpu", "--precision", "fp32", "--quiet",
                    "--out", str(out / "map.tif")],
        "trees": ["trees", str(inputs["sparse"]), "--block-size", "512", "--out", str(out / "trees.gpkg")],
        "forest": ["forest", str(inputs["chm"]), "--block-size", "512", "--out", str(out / "forest.gpkg")],
        "change": ["change", str(inputs["chm"]), str(inputs["after"]), "--block-size", "512", "--out", str(out / "change.tif")],
        "apply-calibration": ["apply-calibration", str(inputs["chm"]), str(inputs["calibration"]), "--block-size", "512",
                              "--out", str(out / "calibrated.tif")],
    }


@pytest.mark.parametrize("command", ["predict", "trees", "forest", "change", "apply-calibration"])
def test_peak_memory_does_not_grow_with_the_region(regions, tmp_path, command):
    peaks = {}
    for size in (SIZE, 2 * SIZE):
        out = tmp_path / str(size)
        out.mkdir()
        peaks[size] = _peak_mb(_commands(regions[size], out)[command])
    assert peaks[2 * SIZE] <= 1.1 * peaks[SIZE], f"{command}: peak {peaks[SIZE]:.0f} MB over {SIZE}² px, {peaks[2 * SIZE]:.0f} MB over 4x"
