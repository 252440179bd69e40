"""The pipeline's ceiling: ``canopy predict`` with a model that costs nothing, against GDAL's floor for the same job.

Both run A B A B in fresh processes over the same seeded 8-bit RGB GeoTIFF (default 8192 x 8192 px at
0.5 m), timed from after their imports:

- canopy: ``canopy.predict`` as shipped (reading, chipping, blending, writing the COG), except that
  the model is replaced by one that computes heights from the chips in microseconds;
- GDAL's floor: read the imagery and write a float32 COG with canopy's layout (512 px tiles, DEFLATE
  with the floating-point predictor, average overviews) on all cores, through GDAL's COG driver.

Prints both times and their ratio.

    python benchmarks/pipeline_ceiling.py [--size 8192] [--repeat 2] [--block-size 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import child_figures  # noqa: E402
from predict_throughput import machine_record, make_scene  # noqa: E402

CANOPY = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
import canopy
import canopy.analysis.maps, canopy.imagery.discover, canopy.prediction, canopy.runtime.local  # imports before the clock
from canopy.models.height_model import LoadedModel
from canopy.models.registry import get_model_spec
import canopy.runtime.block_worker as block_worker


class Free(torch.nn.Module):
    '''Heights from the chips' green band: microseconds per chip, so only the pipeline is left to time.'''

    def forward(self, x):
        return torch.from_numpy(x.numpy()[:, 1:2] * 30.0)  # numpy: no thread pool woken for nothing


spec = get_model_spec("dinov2_vits14")
block_worker.load_height_model = lambda *a, **k: LoadedModel(Free(), spec, "free", "free")
scene, out, size, block_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
canopy.predict(scene, bbox=None, model="dinov2_vits14", weights="random", out=out, res=0.5, chip_size=224,
               block_size=block_size, device="cpu", precision="fp32")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

FLOOR = """
import json, sys, time
import rasterio, rasterio.shutil
scene, out = sys.argv[1], sys.argv[2]
start = time.perf_counter()
with rasterio.open(scene) as src:
    vrt = (f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}"><SRS>{src.crs.to_wkt()}</SRS>'
           f'<GeoTransform>{", ".join(repr(v) for v in src.transform.to_gdal())}</GeoTransform>'
           '<VRTRasterBand dataType="Float32" band="1"><ComplexSource>'
           f'<SourceFilename relativeToVRT="0">{scene}</SourceFilename><SourceBand>1</SourceBand>'
           '<ScaleOffset>0</ScaleOffset><ScaleRatio>0.1176</ScaleRatio></ComplexSource></VRTRasterBand></VRTDataset>')
rasterio.shutil.copy(vrt, out, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", PREDICTOR="FLOATING_POINT", LEVEL=6,
                     OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _run(code: str, *args: str) -> float:
    """Run a child process and return the seconds it reports."""
    return child_figures([sys.executable, "-c", code, *args])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=2048)
    args = parser.parse_args()
    print(json.dumps(machine_record()))
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        make_scene(scene, args.size)
        times: dict[str, list[float]] = {"canopy": [], "gdal": []}
        for _ in range(args.repeat):
            times["canopy"].append(_run(CANOPY, str(scene), str(Path(tmp) / "canopy.tif"), str(args.size), str(args.block_size)))
            times["gdal"].append(_run(FLOOR, str(scene), str(Path(tmp) / "gdal.tif")))
            print(f"canopy {times['canopy'][-1]:.2f} s, GDAL's floor {times['gdal'][-1]:.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    mpx = args.size**2 / 1e6
    print(f"{mpx:.1f} Mpx: canopy {best['canopy']:.2f} s ({mpx / best['canopy']:.1f} Mpx/s), GDAL's floor "
          f"{best['gdal']:.2f} s ({mpx / best['gdal']:.1f} Mpx/s): canopy at {best['canopy'] / best['gdal']:.2f}x the floor")


if __name__ == "__main__":
    main()
