"""Throughput and peak memory of `canopy predict` against the bare model; prints JSON.

    python benchmarks/predict_throughput.py [--size 2048] [--device cpu] [--precision fp32]

Figures:
- bare model: batches of chips straight through backbone and head (megapixels of chip per second);
- end to end: `predict` over a synthetic 0.5 m GeoTIFF region of size x size px with the same chip
  size and batch, from reading to the finished COG (megapixels of output per second);
- efficiency: the model's share of the end-to-end time, i.e. (chips run x bare seconds per chip) /
  end-to-end seconds; 1.0 means reading, blending and writing are fully hidden behind compute;
- peak memory (max RSS of a fresh process) for the region and for one of four times its area.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import PEAK, child_figures  # noqa: E402


def machine_record() -> dict:
    """The CPU model and the vector/matrix extensions that decide PyTorch's speed, the core count and versions."""
    import torch

    flags: list[str] = []
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return {"cpu": model, "extensions": [f for f in wanted if f in flags], "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def make_scene(path: Path, size: int, res: float = 0.5) -> None:
    """A smooth random 8-bit RGB GeoTIFF of size x size px at ``res`` m in UTM 11N, written in strips.

    Its origin is a whole multiple of ``res``, as the output grid's is, so the grid is the image.
    """
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32611",
                   transform=Affine(res, 0, 300000.0, 0, -res, round(4100000.0 / res) * res), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 256):
            h = min(256, size - row)
            yy, xx = np.mgrid[row : row + h, 0:size] / 97.0
            base = 120 + 60 * np.sin(xx) * np.cos(yy)
            data = np.clip(base[None] + rng.normal(0, 12, (3, h, size)), 0, 254).astype("uint8")
            dst.write(data, window=rasterio.windows.Window(0, row, size, h))


def bare_model(model_name: str, chip: int, batch: int, device: str, precision: str, seconds: float) -> dict:
    """Chips per second straight through the model."""
    import torch

    from canopy.models.height_model import ModelRef, load_height_model
    from canopy.runtime.device import select_device, select_precision
    from canopy.runtime.inference import ChipPredictor

    dev = select_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = ChipPredictor(load_height_model(ModelRef.resolve(model_name, "random")).model, dev, select_precision(dev, precision))
    chips = np.random.default_rng(0).random((batch, 3, chip, chip), dtype=np.float32)
    predictor(chips)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        predictor(chips)
        n += 1
    elapsed = time.perf_counter() - start
    per_chip = elapsed / (n * batch)
    return {"chips_per_s": 1 / per_chip, "megapixels_per_s": chip * chip / per_chip / 1e6, "seconds_per_chip": per_chip}


def end_to_end(scene: Path, size: int, args) -> dict:
    """Run predict in a fresh process over the top-left size x size px; return its timing and peak RSS."""
    code = PEAK + f"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
from canopy.prediction import RunSummary, predict
bbox = (300000.0, {4100000.0 - size * 0.5}, {300000.0 + size * 0.5}, 4100000.0)
start = time.perf_counter()
result = predict({str(scene)!r}, bbox, bbox_crs="EPSG:32611", model={args.model!r}, weights="random",
                 out={str(scene.parent / f"out_{size}.tif")!r}, res=0.5, chip_size={args.chip}, batch_size={args.batch},
                 block_size={args.block_size}, device={args.device!r}, precision={args.precision!r})
elapsed = time.perf_counter() - start
s = RunSummary.from_attrs(result.attrs)
print(json.dumps({{"seconds": elapsed, "chips": s.chips, "blocks": s.blocks_computed,
                  "peak_rss_mb": peak_rss_mb()}}))
"""
    figures = child_figures([sys.executable, "-c", code])
    figures["megapixels_per_s"] = size * size / figures["seconds"] / 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dinov2_vits14")
    parser.add_argument("--size", type=int, default=2048, help="side of the 1x region in px (the 4x region doubles it)")
    parser.add_argument("--chip", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--bare-seconds", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        make_scene(scene, 2 * args.size)
        bare = bare_model(args.model, args.chip, args.batch, args.device, args.precision, args.bare_seconds)
        one = end_to_end(scene, args.size, args)
        four = end_to_end(scene, 2 * args.size, args)
    efficiency = one["chips"] * bare["seconds_per_chip"] / one["seconds"]
    report = {
        "machine": machine_record(),
        "settings": vars(args),
        "bare_model": bare,
        "end_to_end_1x": one,
        "end_to_end_4x": four,
        "output_mp_per_s_over_bare_chip_mp_per_s": one["megapixels_per_s"] / bare["megapixels_per_s"],
        "efficiency_model_share_of_end_to_end": efficiency,
        "chip_pixels_per_output_pixel": one["chips"] * args.chip**2 / args.size**2,
        "peak_memory_ratio_4x_over_1x": four["peak_rss_mb"] / one["peak_rss_mb"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
