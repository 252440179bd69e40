"""What Dask distribution costs: the same region single-process, on 1 worker process and on 2; prints JSON.

    python benchmarks/distributed_overhead.py [--size 1024] [--rounds 2]

Figures, each from a fresh client process, in A B C A B C order:
- wall time of ``canopy.predict`` single-process (PyTorch on all cores), on a local cluster of one
  worker process with all cores, and on two worker processes with the cores split; the cluster is
  started before the clock starts (its start-up is reported apart), the model load is inside it,
  as it is for the single-process run;
- overhead of one worker over single-process, the target being within 10 %;
- the client's peak resident memory (VmHWM, workers not included) on two worker processes for the
  region and for one of four times its area, at the end (the COG assembled, GDAL's caches included)
  and when the last block is done (before assembly): the client holds no pixels while blocks are
  computed, so that figure should not grow with the region.
Every distributed map is compared byte for byte with the single-process one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from child import PEAK, child_figures  # noqa: E402
from predict_throughput import machine_record, make_scene  # noqa: E402

CLIENT = PEAK + """
import hashlib, json, time, warnings
warnings.simplefilter("ignore")
import canopy
workers, threads = {workers}, {threads}
options = dict(bbox=(300000.0, {bottom}, {right}, 4100000.0), bbox_crs="EPSG:32611", model={model!r}, weights="random",
               res=0.5, chip_size={chip}, block_size={block}, device="cpu", precision="fp32", out={out!r})
if __name__ == "__main__":
    startup = 0.0
    if workers:
        from distributed import Client, LocalCluster
        begin = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        startup = time.perf_counter() - begin
    else:
        client = None
    marks = {{}}

    def progress(p):
        if p.blocks_done == p.blocks_total:
            marks["before_assembly"] = peak_rss_mb()

    begin = time.perf_counter()
    summary = canopy.RunSummary.from_attrs(canopy.predict({scene!r}, client=client, progress=progress, **options).attrs)
    seconds = time.perf_counter() - begin
    digest = hashlib.sha256(open({out!r}, "rb").read()).hexdigest()
    print(json.dumps({{"seconds": seconds, "cluster_startup_s": startup, "blocks": summary.blocks_computed,
                      "client_peak_rss_mb": peak_rss_mb(), "client_peak_before_assembly_mb": marks["before_assembly"],
                      "sha256": digest}}))
    if client is not None:
        client.close()
        cluster.close()
"""


def run_client(scene: Path, size: int, workers: int, threads: int, out: Path, args) -> dict:
    """One predict from a fresh client process; its wall time, peak memory and the map's digest."""
    code = CLIENT.format(workers=workers, threads=threads, bottom=4100000.0 - size * 0.5, right=300000.0 + size * 0.5,
                         model=args.model, chip=args.chip, block=args.block_size, out=str(out), scene=str(scene))
    script = out.with_suffix(".py")
    script.write_text(code)  # a file, not -c: Dask's worker processes start by spawn and re-import the main module
    return child_figures([sys.executable, str(script)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dinov2_vits14")
    parser.add_argument("--size", type=int, default=1024, help="side of the region in px (the 4x region doubles it)")
    parser.add_argument("--chip", type=int, default=224)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    variants = {"single": (0, cores), "1 worker": (1, cores), "2 workers": (2, max(1, cores // 2))}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        make_scene(scene, 2 * args.size)
        digests, startup, peaks, computing = set(), {}, {}, {}
        for round_ in range(args.rounds):
            for name, (workers, threads) in variants.items():
                figures = run_client(scene, args.size, workers, threads, Path(tmp) / f"{round_}_{workers}.tif", args)
                times[name].append(figures["seconds"])
                digests.add(figures["sha256"])
                startup[name] = figures["cluster_startup_s"]
                peaks[f"{name} 1x"] = figures["client_peak_rss_mb"]
                computing[f"{name} 1x"] = figures["client_peak_before_assembly_mb"]
        big = run_client(scene, 2 * args.size, 2, max(1, cores // 2), Path(tmp) / "big.tif", args)
        peaks["2 workers 4x"] = big["client_peak_rss_mb"]
        computing["2 workers 4x"] = big["client_peak_before_assembly_mb"]
    median = {name: statistics.median(values) for name, values in times.items()}
    report = {
        "machine": machine_record(),
        "settings": {**vars(args), "cores": cores, "variants": {k: {"workers": w, "threads": t} for k, (w, t) in variants.items()}},
        "seconds": times,
        "median_seconds": median,
        "one_worker_overhead": median["1 worker"] / median["single"] - 1,
        "two_workers_speedup": median["single"] / median["2 workers"],
        "cluster_startup_s": {k: v for k, v in startup.items() if k != "single"},
        "client_peak_rss_mb": peaks,
        "client_peak_ratio_4x_over_1x": peaks["2 workers 4x"] / peaks["2 workers 1x"],
        "client_peak_before_assembly_mb": computing,
        "client_peak_before_assembly_ratio_4x_over_1x": computing["2 workers 4x"] / computing["2 workers 1x"],
        "all_maps_byte_identical": len(digests) == 1,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
