"""canopy against geoai-py's CanopyHeightEstimation on the same model, weights and input, timed A B A B.

    python benchmarks/peer_comparison.py --peer-python /path/to/geoai-env/bin/python [--size 1024] [--rounds 2]

geoai-py is not a dependency of canopy: install it in another environment (``pip install
geoai-py==0.40.1 torch==2.13.0``) and pass that environment's Python. The script:

1. writes a smooth random 8-bit RGB GeoTIFF of size x size px at 0.6 m (UTM 11N);
2. writes Meta's ViT-L canopy-height model (``compressed_SSLlarge``: int8 dynamically quantised,
   the published layout ``backbone.*`` / ``decode_head.*``) with seeded random weights, and the
   float safetensors conversion of that file (``canopy models convert``);
3. checks that both tools compute the same heights on one chip from that file (same weights,
   same arithmetic), so the timings compare like with like;
4. runs each variant in a fresh process per round, in turn (A B A B ...), timing the whole
   process (imports, model load, reading, predicting, writing the GeoTIFF) and its peak RSS;
5. prints JSON: per-variant medians, canopy's throughput ratio against the peer, and the machine.

Variants: the peer with its defaults (tiles 256, overlap 128, batch 4); canopy with the int8
file and its defaults; canopy with the peer's tiling (overlap 128); canopy with the converted
float file and ``--precision auto`` (bf16 where the CPU has bf16 instructions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import PEAK, child_figures  # noqa: E402
from predict_throughput import machine_record, make_scene  # noqa: E402

RES = 0.6

PEER = PEAK + """
import json, sys, time
start = time.perf_counter()
import torch
from geoai.canopy import CanopyHeightEstimation
est = CanopyHeightEstimation("compressed_SSLlarge", checkpoint_path={ckpt!r}, device="cpu")
loaded = time.perf_counter()
est.predict({scene!r}, output_path={out!r})
done = time.perf_counter()
print(json.dumps({{"seconds": done - start, "load_seconds": loaded - start, "threads": torch.get_num_threads(),
                  "peak_rss_mb": peak_rss_mb()}}))
"""

CANOPY = PEAK + """
import json, sys, time, warnings
start = time.perf_counter()
warnings.simplefilter("ignore")
import canopy
r = canopy.predict({scene!r}, model="meta-chm-v1-large", weights={weights!r}, out={out!r}, device="cpu", {extra})
done = time.perf_counter()
s = canopy.RunSummary.from_attrs(r.attrs)
print(json.dumps({{"seconds": done - start, "chips": s.chips, "chip_px_per_output_px": s.chip_pixels_per_output_pixel,
                  "peak_rss_mb": peak_rss_mb()}}))
"""

PEER_CHIP = """
import numpy as np, torch
from geoai.canopy import CanopyHeightEstimation
est = CanopyHeightEstimation("compressed_SSLlarge", checkpoint_path={ckpt!r}, device="cpu")
x = torch.from_numpy(np.load({chip!r}))
with torch.no_grad():
    y = 10 * est.model(est._normalize_image(x))
np.save({result!r}, y.numpy())
"""


def write_weights(folder: Path) -> tuple[Path, Path]:
    """Meta's compressed ViT-L layout with seeded random weights, and its float conversion."""
    import torch
    from torch import nn

    from canopy.models.convert import convert_to_float
    from canopy.models.height_model import ModelRef, load_height_model

    model = load_height_model(ModelRef.resolve("meta-chm-v1-large", "random(seed=7)")).model

    class Published(nn.Module):  # the attribute names of Meta's SSLAE
        def __init__(self):
            super().__init__()
            self.backbone, self.decode_head = model.backbone, model.head

    quantized = torch.ao.quantization.quantize_dynamic(Published().eval(), {nn.Linear}, dtype=torch.qint8)
    int8 = folder / "compressed_SSLlarge.pth"
    torch.save(quantized.state_dict(), int8)
    converted = folder / "SSLlarge_converted.safetensors"
    convert_to_float(int8, converted)
    return int8, converted


def same_heights(peer_python: str, int8: Path, folder: Path) -> float:
    """Max |difference| in metres between the peer's and canopy's model on one random chip from the same file."""
    import numpy as np
    import torch

    from canopy.models.height_model import ModelRef, load_height_model

    chip = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    np.save(folder / "chip.npy", chip)
    code = PEER_CHIP.format(ckpt=str(int8), chip=str(folder / "chip.npy"), result=str(folder / "peer_chip.npy"))
    subprocess.run([peer_python, "-c", code], check=True, capture_output=True, text=True)
    ours = load_height_model(ModelRef.resolve("meta-chm-v1-large", int8), device=torch.device("cpu")).model
    with torch.inference_mode():
        mine = ours(torch.from_numpy(chip))[:, 0].numpy()
    return float(np.abs(np.load(folder / "peer_chip.npy").reshape(mine.shape) - mine).max())


def run(python: str, code: str) -> dict:
    """One variant in a fresh process; its own figures plus the process's wall time."""
    start = time.perf_counter()
    figures = child_figures([python, "-c", code])
    figures["process_seconds"] = time.perf_counter() - start
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", required=True, help="Python of an environment with geoai-py installed")
    parser.add_argument("--size", type=int, default=1024, help="side of the input GeoTIFF in px (0.6 m pixels)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene = folder / "scene.tif"
        make_scene(scene, args.size, res=RES)
        int8, converted = write_weights(folder)
        check = same_heights(args.peer_python, int8, folder)
        variants = {
            "peer geoai-py (tiles 256, overlap 128)": (args.peer_python, PEER.format(ckpt=str(int8), scene=str(scene), out=str(folder / "peer.tif"))),
            "canopy int8 (defaults)": (sys.executable, CANOPY.format(scene=str(scene), weights=str(int8), out=str(folder / "a.tif"), extra="")),
            "canopy int8 (overlap 128)": (sys.executable, CANOPY.format(scene=str(scene), weights=str(int8), out=str(folder / "b.tif"), extra="overlap=128")),
            "canopy converted float (precision auto)": (sys.executable, CANOPY.format(scene=str(scene), weights=str(converted), out=str(folder / "c.tif"), extra="precision='auto'")),
        }
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (python, code) in variants.items():
                runs[name].append(run(python, code))
                print(f"{name}: {runs[name][-1]['process_seconds']:.1f} s", file=sys.stderr, flush=True)
    peer_name = next(iter(variants))
    peer_s = statistics.median(r["process_seconds"] for r in runs[peer_name])
    summary = {}
    for name, results in runs.items():
        seconds = statistics.median(r["process_seconds"] for r in results)
        summary[name] = {
            "process_seconds_median": seconds,
            "process_seconds": [round(r["process_seconds"], 2) for r in results],
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results),
            "throughput_vs_peer": peer_s / seconds,
            **{k: results[-1][k] for k in ("chips", "chip_px_per_output_px", "load_seconds", "threads") if k in results[-1]},
        }
    print(json.dumps({"machine": machine_record(), "size_px": args.size, "res_m": RES, "rounds": args.rounds,
                      "same_weights_max_abs_diff_m_one_chip": check, "variants": summary}, indent=2))


if __name__ == "__main__":
    main()
