"""CHMv2 at full size on a GPU: parity with transformers in float32, the bf16 error, and chips per second.

Random weights in transformers' CHMv2ForDepthEstimation (the published architecture) are saved in
both published layouts (the Hugging Face file, and Meta's head and backbone files), loaded by canopy,
and run on the same chips. Prints max abs differences in metres and throughput for fp32 and bf16,
timed A B A B. Needs only torch, safetensors, PyYAML and transformers >= 5 with CHMv2.

    python benchmarks/chmv2_gpu.py [--batch 8] [--chip 416] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from checkpoints import chmv2_hf_model, save_chmv2_layouts  # noqa: E402

from canopy.models.height_model import ModelRef, load_height_model  # noqa: E402
from canopy.models.registry import get_model_spec  # noqa: E402


def _time(model, x, dtype, rounds: int) -> float:
    """Seconds per batch, after a warm-up, under autocast to ``dtype`` (None: float32)."""
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(rounds):
            model(x)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chip", type=int, default=416)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="cuda; cpu checks parity only (no timings)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    spec = get_model_spec("meta-chm-v2")
    hf = chmv2_hf_model(spec)
    rgb = torch.rand(args.batch, 3, args.chip, args.chip, generator=torch.Generator().manual_seed(0)).to(device)
    mean = torch.tensor(spec.normalization.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.normalization.std, device=device).view(1, 3, 1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        layouts = save_chmv2_layouts(hf, Path(tmp))
        hf = hf.to(device)
        with torch.inference_mode():
            reference = hf(pixel_values=(rgb - mean) / std).predicted_depth
        print(f"reference heights: mean {reference.mean().item():.3f} m, std {reference.std().item():.3f} m")
        models = {}
        for label, path in layouts.items():
            loaded = load_height_model(ModelRef(spec, str(path)), device=device)
            models[label] = loaded.model.to(device).eval()
            with torch.inference_mode():
                heights = models[label](rgb)[:, 0]
            print(f"fp32 parity, {label} layout: max |canopy - transformers| = {(heights - reference).abs().max().item():.2e} m")
    model = models["meta"]
    if device.type != "cuda":
        return
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = model(rgb)[:, 0]
    error = (bf16 - reference).abs()
    print(f"bf16 autocast vs fp32 reference: max {error.max().item():.3f} m, mean {error.mean().item():.4f} m")
    del hf, models
    timings = {"fp32": [], "bf16": []}
    for _ in range(2):  # A B A B
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            timings[label].append(_time(model, rgb, dtype, args.rounds))
    for label, seconds in timings.items():
        best = min(seconds)
        print(f"{label}: {best * 1000:.1f} ms per batch of {args.batch} chips of {args.chip} px = "
              f"{args.batch / best:.1f} chips/s = {args.batch * (args.chip * 0.6) ** 2 / 1e6 / best * 3600:.0f} km²/h at 0.6 m "
              f"(runs: {', '.join(f'{s * 1000:.1f}' for s in seconds)} ms)")
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
