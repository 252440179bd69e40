"""Time and peak memory of every analysis on the block engine, at two map sizes, in this process's threads and on
two Dask worker processes; prints JSON lines and a Markdown table.

    python benchmarks/analyses.py [--sizes 5000 10000] [--block-size 2048] [--workers 2]
    python benchmarks/analyses.py --sizes 5000 --baseline ../canopy-before --rounds 2
    python benchmarks/analyses.py --sizes 10000 --analyses aggregate

With ``--baseline DIR`` (a checkout of another canopy commit), each analysis runs at the first size
in this process's threads, A B A B: the baseline's code (``PYTHONPATH=DIR``) against this checkout's.

The maps are seeded synthetic forests at 0.5 m (:func:`tree_throughput.make_forest`; 5000 px a side
is 25 Mpx, 10000 px 100 Mpx), the second date the same forest with a quarter of it harvested.
Each run is a fresh process, timed from after its imports (a Dask cluster's start-up is reported
apart, not timed), and reports its own peak resident memory (VmHWM) and, on Dask, each worker's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import PEAK, child_figures  # noqa: E402
from predict_throughput import machine_record  # noqa: E402
from tree_throughput import make_forest  # noqa: E402

RUN = PEAK + """
import inspect, json, sys, time, warnings
warnings.simplefilter("ignore")
from pathlib import Path
import canopy
from canopy.analysis.trees import write_trees

name, folder, block_size, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if __name__ == "__main__":
    client, startup = None, 0.0
    if workers:
        from distributed import Client, LocalCluster
        begin = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        startup = time.perf_counter() - begin
    out = folder / "out"
    out.mkdir()
    options = dict(block_size=block_size, client=client) if workers else dict(block_size=block_size)

    def call(function, *args):  # an older checkout's functions take fewer options
        known = inspect.signature(function).parameters
        return function(*args, **{k: v for k, v in options.items() if k in known})

    begin = time.perf_counter()
    if name == "trees":
        call(write_trees, folder / "before.tif", out / "trees.gpkg")
    elif name == "forest":
        call(canopy.forest, folder / "before.tif", out / "forest.gpkg")
    elif name == "change":
        call(canopy.change, folder / "before.tif", folder / "after.tif", out / "change.tif")
    elif name == "aggregate":
        call(canopy.aggregate, folder / "before.tif", 10.0, out / "grid.tif")
    else:
        call(canopy.apply_calibration, folder / "before.tif", folder / "calibration.json", out / "calibrated.tif")
    seconds = time.perf_counter() - begin
    workers_mb = sorted(client.run(peak_rss_mb).values()) if client is not None else []
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "workers_peak_mb": workers_mb, "cluster_startup_s": startup}))
"""

ANALYSES = ("trees", "forest", "change", "apply-calibration", "aggregate")


def make_inputs(folder: Path, size: int) -> None:
    """The forest, the same forest with its north-west quarter harvested (0.3 m), and a calibration for maps of no model."""
    from canopy.calibration import Calibration

    make_forest(folder / "before.tif", size)
    shutil.copy(folder / "before.tif", folder / "after.tif")
    with rasterio.open(folder / "after.tif", "r+") as dst:
        for row in range(0, size // 2, 1000):
            for col in range(0, size // 2, 1000):
                window = Window(col, row, min(1000, size // 2 - col), min(1000, size // 2 - row))
                dst.write(np.full((1, window.height, window.width), 0.3, np.float32), window=window)
    Calibration("unknown", "unknown", "unknown", ((0.0, 0.5), (40.0, 38.0)), 1000, (0.0, 40.0), "benchmark").write(
        folder / "calibration.json")


def _run(name: str, folder: Path, block_size: int, workers: int, code: Path | None = None) -> dict:
    """One analysis in a fresh process (with ``code`` first on its path: another checkout); its figures."""
    env = {**os.environ, "PYTHONPATH": str(code)} if code is not None else None
    figures = child_figures([sys.executable, "-c", RUN, name, str(folder), str(block_size), str(workers)], env=env)
    shutil.rmtree(folder / "out")
    return figures


def compare(baseline: Path, size: int, block_size: int, rounds: int) -> None:
    """Each analysis here, A B A B: the baseline checkout's code, then this one's; print the times and peaks."""
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, size)
        print("\n| analysis | Mpx | baseline s | this s | baseline peak MB | this peak MB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name in ANALYSES:
            runs: dict[str, list[dict]] = {"baseline": [], "this": []}
            for _ in range(rounds):
                for label, code in (("baseline", baseline.resolve()), ("this", here)):
                    runs[label].append(_run(name, folder, block_size, 0, code))
            print(json.dumps({"analysis": name, "mpx": size**2 / 1e6, **runs}), flush=True)
            best = {label: min(r["seconds"] for r in found) for label, found in runs.items()}
            peak = {label: max(r["peak_mb"] for r in found) for label, found in runs.items()}
            print(f"| {name} | {size**2 / 1e6:.0f} | {best['baseline']:.1f} | {best['this']:.1f} | {peak['baseline']:.0f} | "
                  f"{peak['this']:.0f} |", flush=True)


def main() -> None:
    """Run every analysis at each size, here and on the workers, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES))
    args = parser.parse_args()
    print(json.dumps(machine_record()), flush=True)
    if args.baseline is not None:
        compare(args.baseline, args.sizes[0], args.block_size, args.rounds)
        return
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_inputs(folder, size)
            for name in args.analyses:
                for workers in (0, args.workers):
                    figures = _run(name, folder, args.block_size, workers)
                    row = {"analysis": name, "mpx": size**2 / 1e6, "workers": workers, **figures}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print("\n| analysis | Mpx | where | seconds | Mpx/s | peak MB (process) | peak MB (each worker) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        where = f"{r['workers']} Dask workers" if r["workers"] else "threads here"
        workers = ", ".join(f"{m:.0f}" for m in r["workers_peak_mb"]) or "-"
        print(f"| {r['analysis']} | {r['mpx']:.0f} | {where} | {r['seconds']:.1f} | {r['mpx'] / r['seconds']:.2f} | "
              f"{r['peak_mb']:.0f} | {workers} |")


if __name__ == "__main__":
    main()
