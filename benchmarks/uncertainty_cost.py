"""What ``--uncertainty`` and ``--tta`` cost: whole ``canopy.predict`` runs of one scene, plain, with the uncertainty,
and with the uncertainty and test-time flips, interleaved (A B C A B C) in one process; prints JSON lines and a
Markdown table.

    python benchmarks/uncertainty_cost.py [--model meta-chm-v1-large] [--size 512] [--rounds 2]

The model runs on random weights (its arithmetic is the published one's); the scene is a smooth random
RGB GeoTIFF at the model's resolution (:func:`predict_throughput.make_scene`). Each run is timed from the
call to the written map, model loading included (the same in every variant); the chip count shows the
flips' fourfold model work.
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

VARIANTS = {"plain": {}, "--uncertainty": {"uncertainty": True}, "--uncertainty --tta": {"uncertainty": True, "tta": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="meta-chm-v1-large")
    parser.add_argument("--size", type=int, default=512, help="Scene side in px at the model's resolution.")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import canopy
    from canopy.prediction import RunSummary

    warnings.simplefilter("ignore")
    res = canopy.get_model_spec(args.model).ground_resolution
    print(json.dumps({"machine": machine_record()}), flush=True)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        scene = Path(folder) / "scene.tif"
        make_scene(scene, args.size, res)
        for round_ in range(args.rounds):
            for name, options in VARIANTS.items():
                begin = time.perf_counter()
                chm = canopy.predict(scene, model=args.model, weights="random", out=Path(folder) / f"{round_}.tif",
                                     device="cpu", **options)
                seconds = time.perf_counter() - begin
                summary = RunSummary.from_attrs(chm.attrs)
                times[name].append(seconds)
                print(json.dumps({"variant": name, "round": round_, "seconds": round(seconds, 2), "chips": summary.chips,
                                  "precision": chm.attrs["canopy_precision"]}), flush=True)
    base = min(times["plain"])
    print(f"\n| {args.model}, {args.size} x {args.size} px | best of {args.rounds} (s) | x plain |\n| --- | --- | --- |")
    for name, values in times.items():
        print(f"| `{name}` | {min(values):.1f} | {min(values) / base:.2f} |")


if __name__ == "__main__":
    main()
