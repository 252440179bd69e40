"""How far maps of one request differ across configurations: threads, batch size, block size, engine, CPU kernels.

Each configuration runs ``canopy.predict`` in its own process (so thread counts and emulated
instruction sets take effect from the start) on a bundled NEON plot, with a seeded model whose
heights vary by metres (``tests/varied_model.py``). Prints, per precision, the largest height
difference from that precision's reference configuration and whether the NaN masks agree: the
figures behind the README's equality promise.

    python benchmarks/agreement.py [--precision fp32 bf16] [--res 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RGB = ROOT / "canopy" / "data" / "neon" / "TEAK_043_rgb.tif"
EMULATED_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

# name: (environment, threads, batch size, block size, Dask workers)
CONFIGURATIONS = {
    "reference: 2 threads, batch 4, one block": ({}, 2, 4, 4096, 0),
    "1 thread": ({}, 1, 4, 4096, 0),
    "batch 1": ({}, 2, 1, 4096, 0),
    "batch 7": ({}, 2, 7, 4096, 0),
    "blocks of 84 px": ({}, 2, 4, 84, 0),
    "blocks of 168 px": ({}, 2, 4, 168, 0),
    "Dask, 2 workers x 1 thread": ({}, 1, 4, 168, 2),
    "AVX2 kernels (emulated)": (EMULATED_AVX2, 2, 4, 4096, 0),
}


def run_one(spec: dict) -> None:
    """In a child process: predict with one configuration and save the heights."""
    import warnings

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from varied_model import varied_model_file

    import canopy

    torch.set_num_threads(spec["threads"])
    warnings.simplefilter("ignore")
    model = varied_model_file(Path(spec["out"]).with_suffix(".safetensors"))
    extra = {"workers": spec["workers"], "threads_per_worker": 1} if spec["workers"] else {}
    heights = canopy.predict(RGB, model=str(model), res=spec["res"], chip_size=112, overlap=28, batch_size=spec["batch"],
                             block_size=spec["block"], device="cpu", precision=spec["precision"], offline=True, **extra)
    np.save(spec["out"], heights.values)


def measure(precision: str, res: float, folder: Path) -> list[tuple[str, float, bool]]:
    """Max |difference| (m) and NaN-mask agreement of every configuration against the reference."""
    maps = {}
    for name, (env, threads, batch, block, workers) in CONFIGURATIONS.items():
        out = folder / f"{precision}-{len(maps)}.npy"
        spec = {"threads": threads, "batch": batch, "block": block, "workers": workers, "res": res,
                "precision": precision, "out": str(out)}
        subprocess.run([sys.executable, __file__, "--run", json.dumps(spec)], check=True,
                       env={**os.environ, **env, "CANOPY_OFFLINE": "1"})
        maps[name] = np.load(out)
    reference = maps[next(iter(maps))]
    rows = []
    for name, heights in maps.items():
        same_mask = bool(np.array_equal(np.isnan(heights), np.isnan(reference)))
        rows.append((name, float(np.nanmax(np.abs(heights - reference))), same_mask))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--res", type=float, default=0.1)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(json.loads(args.run))
        return
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"kernels {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision:
            rows = measure(precision, args.res, Path(tmp))
            print(f"\n{precision}: max |height - reference| over the map (heights {args.res} m px)")
            for name, diff, same_mask in rows:
                print(f"  {name:<44} {diff:10.2e} m   NaN mask {'same' if same_mask else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
