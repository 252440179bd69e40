"""Coverage (PICP) and mean width (MPIW) of prediction intervals on held-out lidar plots, by height bin: one global
interval, intervals by calibrated-height bin, and those scaled by the raw uncertainty too (what ``canopy calibrate``
fits); prints a Markdown table and writes a figure.

    python benchmarks/interval_coverage.py [--figure docs/images/interval_coverage.png] [--level 0.9]

The maps are NEON's lidar canopy height of the 12 bundled TEAK plots, distorted as a model might
(``0.6 h + 0.01 h² + 2``) plus noise whose standard deviation grows with height (``0.1 + 0.15 h``) and
is three times larger on a random third of the pixels (shade, say); their raw uncertainty knows that
standard deviation within 10 %. The intervals are fitted on six plots (the mapping and the scores
held out by plot, as ``canopy calibrate`` does) and scored on the other six.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import rasterio

import canopy
from canopy.accuracy.calibration_fit import _folds, _held_out_calibrated, _pairs_on_grid
from canopy.accuracy.evaluation import coverage, paired_layers
from canopy.accuracy.interval_fit import _fit
from canopy.io.companions import companion

NEON = Path(canopy.__path__[0]) / "data" / "neon"
PLOTS = ["TEAK_043", "TEAK_044", "TEAK_045", "TEAK_046", "TEAK_047", "TEAK_049", "TEAK_050", "TEAK_051", "TEAK_052",
         "TEAK_053", "TEAK_054", "TEAK_055"]
TAGS = {"canopy_model": "simulated", "canopy_weights": "none", "canopy_head_weights": "none",
        "canopy_uncertainty": "simulated standard deviation (m)"}


def simulated_maps(folder: Path) -> list[Path]:
    """The distorted, noisy maps of every plot, each with its uncertainty beside it."""
    rng = np.random.default_rng(0)
    maps = []
    for plot in PLOTS:
        with rasterio.open(NEON / f"{plot}_chm_1m.tif") as src:
            profile, lidar = src.profile, src.read(1, masked=True).filled(np.nan).astype(np.float64)
        profile.update(nodata=np.nan, dtype="float32")
        sd = (0.1 + 0.15 * lidar) * np.where(rng.random(lidar.shape) < 0.3, 3.0, 1.0)
        heights = 0.6 * lidar + 0.01 * lidar**2 + 2.0 + rng.normal(0, 1, lidar.shape) * sd
        for path, values in ((folder / f"{plot}.tif", heights), (folder / f"{plot}.uncertainty.tif", sd * np.exp(rng.normal(0, 0.1, lidar.shape)))):
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(values.astype(np.float32), 1)
                dst.update_tags(**TAGS)
        maps.append(folder / f"{plot}.tif")
    return maps


def held_out(calibration, maps, plots, scaled: bool) -> dict:
    """PICP and MPIW of a calibration's interval on plots it was not fitted on."""
    parts = []
    for path, plot in zip(maps, plots):
        layers = [path, companion(path, "uncertainty")] if scaled else [path]
        for bands, lidar in paired_layers(layers, NEON / f"{plot}_chm_1m.tif"):
            parts.append((*calibration.interval.bounds(calibration.apply(bands[0]), bands[1] if scaled else None), lidar))
    return coverage(*(np.concatenate([p[k].ravel() for p in parts]) for k in range(3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--level", type=float, default=0.9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        maps = simulated_maps(Path(folder))
        fitted = canopy.calibrate(maps[:6], [NEON / f"{p}_chm_1m.tif" for p in PLOTS[:6]], level=args.level)
        grids = [_pairs_on_grid(str(m), str(NEON / f"{p}_chm_1m.tif"), True) for m, p in zip(maps[:6], PLOTS[:6])]
        heights, lidar, spread = _held_out_calibrated(_folds(grids)[1])
        variants = {
            "one global interval": (_fit(heights, lidar, None, "", args.level, 1), False),
            "by height bin": (_fit(heights, lidar, None, "", args.level, 8), False),
            "by height bin, scaled by the uncertainty": (_fit(heights, lidar, spread, TAGS["canopy_uncertainty"], args.level, 8), True),
        }
        results = {name: held_out(dataclasses.replace(fitted, interval=interval), maps[6:], PLOTS[6:], scaled)
                   for name, (interval, scaled) in variants.items()}
    chosen = "scaled by the uncertainty" if fitted.interval.scaled else "by height bin"
    print(f"canopy calibrate kept: {chosen}\n")
    bins = list(next(iter(results.values()))["by_height_bin"])
    print(f"| {args.level:.0%} interval, 6 held-out plots | all | " + " | ".join(f"{b} m" for b in bins) + " |")
    print("| --- " * (len(bins) + 2) + "|")
    for name, result in results.items():
        cells = [f"{result['picp']:.3f} / {result['mpiw']:.1f} m"]
        cells += [f"{row['picp']:.3f} / {row['mpiw']:.1f} m" for row in result["by_height_bin"].values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\npixels per bin: " + ", ".join(f"{b} m: {row['n']}" for b, row in next(iter(results.values()))["by_height_bin"].items()))
    if args.figure is not None:
        figure(results, bins, args.level, args.figure)


def figure(results: dict, bins: list[str], level: float, png: Path) -> None:
    """PICP and MPIW by height bin, one bar per variant."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    coverage_ax, width_ax = fig.subplots(1, 2)
    x = np.arange(len(bins) + 1)
    for k, (name, result) in enumerate(results.items()):
        rows = [result, *result["by_height_bin"].values()]
        coverage_ax.bar(x + (k - 1) * 0.27, [r["picp"] for r in rows], 0.27, label=name)
        width_ax.bar(x + (k - 1) * 0.27, [r["mpiw"] for r in rows], 0.27, label=name)
    coverage_ax.axhline(level, color="black", linestyle="--", linewidth=1)
    coverage_ax.set_ylim(0.5, 1.0)
    coverage_ax.set_ylabel("share of lidar heights inside (PICP)")
    width_ax.set_ylabel("mean width (MPIW, m)")
    for ax in (coverage_ax, width_ax):
        ax.set_xticks(x, ["all", *bins])
        ax.set_xlabel("lidar height (m)")
    coverage_ax.set_title(f"{level:.0%} intervals on 6 held-out NEON plots (simulated errors)", fontsize=9)
    width_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
