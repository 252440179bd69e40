"""GPU figures for `benchmarks/gpu_check.sh`: per model and precision, bare chips/s, end-to-end Mpx/s,
the model's share of wall time, peak GPU memory, and the backbone's achieved TFLOP/s against the card's
dense bf16 peak. Prints JSON.

    python benchmarks/gpu_throughput.py [--models dinov2_vits14 dinov2_vitl14 meta-chm-v1-huge meta-chm-v2] [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import machine_record, make_scene  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def backbone_flops(spec, chip: int) -> float:
    """Multiply-adds x 2 of one chip through the ViT: patch embedding, then per block qkv, attention, projection, MLP."""
    b = spec.backbone
    n = (chip // b.patch_size) ** 2 + 1 + b.num_register_tokens
    d, hidden = b.embed_dim, int(b.embed_dim * b.mlp_ratio)
    per_block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    return 2 * (n - 1) * 3 * b.patch_size**2 * d + b.depth * per_block


def measure(name: str, precision: str, chip: int, batch: int, seconds: float, scene: Path, size: int) -> dict:
    """Bare model, backbone alone and end-to-end predict for one model and precision on CUDA."""
    import torch

    import canopy
    from canopy.models.height_model import ModelRef, load_height_model
    from canopy.runtime.device import select_precision
    from canopy.runtime.inference import ChipPredictor

    device = torch.device("cuda")
    dtype = select_precision(device, precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_height_model(ModelRef.resolve(name, "random")).model
    spec = model.spec
    predictor = ChipPredictor(model, device, dtype)
    chips = torch.rand(batch, 3, chip, chip).numpy()

    def timed(fn) -> float:
        fn()
        torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 3:
            fn()
            n += 1
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / (n * batch)

    torch.cuda.reset_peak_memory_stats()
    per_chip = timed(lambda: predictor(chips))
    x = torch.from_numpy(chips).to(device)

    def backbone_only():
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            model.features(x)

    per_chip_backbone = timed(backbone_only)
    peak_model_gb = torch.cuda.max_memory_allocated() / 1e9
    gpu = torch.cuda.get_device_name(0)
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in gpu), None)
    tflops = backbone_flops(spec, chip) / per_chip_backbone / 1e12
    predictor = model = None  # free the GPU memory before the end-to-end run
    torch.cuda.empty_cache()
    bbox = (300000.0, 4100000.0 - size * 0.5, 300000.0 + size * 0.5, 4100000.0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = canopy.predict(str(scene), bbox, bbox_crs="EPSG:32611", model=name, weights="random", res=0.5,
                                chip_size=chip, device="cuda", precision=precision,
                                out=str(scene.parent / f"{name}-{precision}.tif"))
    wall = time.perf_counter() - start
    summary = canopy.RunSummary.from_attrs(result.attrs)
    return {
        "model": name, "precision": precision, "chip": chip, "batch": batch,
        "bare_chips_per_s": 1 / per_chip, "backbone_chips_per_s": 1 / per_chip_backbone,
        "backbone_tflops": tflops, "bf16_peak_tflops": peak,
        "backbone_share_of_peak": tflops / peak if peak else None,
        "peak_gpu_memory_gb": peak_model_gb,
        "end_to_end_seconds": wall, "end_to_end_mpx_per_s": size * size / wall / 1e6,
        "chips": summary.chips, "chip_px_per_output_px": summary.chip_pixels_per_output_pixel,
        "model_share_of_wall_time": summary.chips * per_chip / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dinov2_vits14", "dinov2_vitl14", "meta-chm-v1-huge", "meta-chm-v2"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--size", type=int, default=2048, help="side of the end-to-end region in px")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per bare-model figure")
    args = parser.parse_args()
    from canopy.models import get_model_spec

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        make_scene(scene, args.size)
        for name in args.models:
            chip = get_model_spec(name).chip_size
            for precision in args.precisions:
                results.append(measure(name, precision, chip, args.batch, args.seconds, scene, args.size))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"machine": machine_record(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
