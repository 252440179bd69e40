"""Tree detection on the bundled NEON plots, scored as the NeonTreeEvaluation benchmark scores it.

For every plot with a lidar canopy height model (``canopy/data/neon/<plot>_chm_<chm>.tif``: ``1m``,
the highest return per 1 m cell, or ``0.5m``, made from the plots' point clouds by
``benchmarks/lidar_chm.py``) and human-drawn crown boxes (``canopy/data/trees``), runs
:func:`canopy.trees` with the given parameters and :func:`canopy.evaluate_trees` with the plot's
extent; prints the per-plot table and the means over plots.

    python benchmarks/tree_accuracy.py [--chm 0.5m] [--smoothing 0.3 --crown-ratio 0.8 ...]
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import geopandas as gpd
import pandas as pd
import rasterio
import shapely

import canopy
from canopy.analysis.tree_tops import TreeParameters

DATA = Path(canopy.__file__).parent / "data"


def plot_scores(parameters: TreeParameters, chm: str = "0.5m") -> pd.DataFrame:
    """The per-plot table (and the mean row) for one set of parameters, on the CHMs of pixel ``chm``."""
    rows = []
    for site in ("teak", "osbs"):
        reference = gpd.read_file(DATA / "trees" / f"{site}_trees.geojson")
        for plot, truth in reference.groupby("plot", sort=True):
            path = DATA / "neon" / f"{plot}_chm_{chm}.tif"
            with rasterio.open(path) as src:
                extent = gpd.GeoDataFrame({"plot": [plot]}, geometry=[shapely.box(*src.bounds)], crs=src.crs)
            found = canopy.trees(path, parameters=parameters)
            rows.append(canopy.evaluate_trees(found.crowns, truth, plots=extent).table().iloc[0])
    table = pd.DataFrame(rows).reset_index(drop=True)
    mean = {"plot": "mean", **{c: table[c].sum() for c in ("detected", "reference", "matched")},
            **{c: table[c].mean() for c in ("precision", "recall", "mean_iou")}}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def main() -> None:
    """Parse the parameters and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chm", choices=("0.5m", "1m"), default="0.5m", help="which bundled lidar CHMs")
    for f in fields(TreeParameters):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=float, default=f.default)
    args = parser.parse_args()
    parameters = replace(TreeParameters(), **{f.name: getattr(args, f.name) for f in fields(TreeParameters)})
    print(parameters, f"on the {args.chm} CHMs")
    print(plot_scores(parameters, args.chm).to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
