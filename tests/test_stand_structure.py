"""Stand structure per polygon: percentiles, several cover thresholds, gaps and tree statistics against hand computations."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

import canopy
from canopy.analysis.trees import TreeLayers
from canopy.cli.main import cli

X0, Y0 = 400000.0, 4000020.0


@pytest.fixture()
def chm(tmp_path):
    """20 x 20 m at 1 m, 20 m tall, with a gap of 12 m² (rows 2-4, cols 2-5), a hole of 9 m² (rows 10-12,
    cols 10-12), and a last row without data."""
    heights = np.full((20, 20), 20.0, np.float32)
    heights[2:5, 2:6] = 0.5
    heights[10:13, 10:13] = 1.0
    heights[19] = np.nan
    path = tmp_path / "chm.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="float32", crs="EPSG:32611",
                       transform=Affine(1, 0, X0, 0, -1, Y0), nodata=np.nan) as dst:
        dst.write(heights, 1)
    return path


def _box(col0, row0, col1, row1):
    """A polygon over map pixels [row0, row1) x [col0, col1)."""
    return shapely.box(X0 + col0, Y0 - row1, X0 + col1, Y0 - row0)


def test_gaps_are_connected_patches_low_and_large_enough_measured_whole(chm):
    stands = gpd.GeoDataFrame({"name": ["all", "half a gap", "the hole"]},
                              geometry=[_box(0, 0, 20, 20), _box(0, 0, 4, 6), _box(8, 8, 15, 15)], crs="EPSG:32611")
    table = canopy.zonal_stats(chm, stands, stats=("gap_fraction",))
    every, half, hole = table.gap_fraction
    assert every == pytest.approx(12 / 380)  # the 9 m² hole is no gap; the row without data does not count
    assert half == pytest.approx(6 / 24)  # 6 of its pixels are in the 12 m² gap, which is measured whole
    assert hole == 0.0
    wider = canopy.zonal_stats(chm, stands, stats=("gap_fraction",), gap_min_area=9.0, gap_height=1.5)
    assert wider.gap_fraction.iloc[0] == pytest.approx(21 / 380) and wider.gap_fraction.iloc[2] == pytest.approx(9 / 49)


def test_percentiles_and_several_cover_thresholds(chm):
    stands = gpd.GeoDataFrame(geometry=[_box(0, 0, 20, 19)], crs="EPSG:32611")
    table = canopy.zonal_stats(chm, stands, stats=("p1", "p10", "p50", "cover"), cover_threshold=(0.75, 5.0))
    row = table.iloc[0]
    # 380 pixels: 12 of 0.5 m, 9 of 1 m, 359 of 20 m
    assert row.height_p1 == 0.5 and row.height_p10 == 20.0 and row.height_p50 == 20.0
    assert row["cover_0.75m"] == pytest.approx(368 / 380)
    assert row.cover_5m == pytest.approx(359 / 380) and "cover" not in table
    with pytest.raises(canopy.errors.EvaluationError, match="p1 to p99"):
        canopy.zonal_stats(chm, stands, stats=("p100",))


def _trees(heights: list[float], places: list[tuple[float, float]]) -> TreeLayers:
    """Hand-made trees at (x, y) map offsets with 3 m² crowns."""
    tops = gpd.GeoDataFrame({"tree_id": range(len(heights)), "height": heights, "crown_diameter_m": 2.0},
                            geometry=[shapely.Point(X0 + x, Y0 - y) for x, y in places], crs="EPSG:32611")
    crowns = gpd.GeoDataFrame({"tree_id": range(len(heights)), "height": heights, "crown_area_m2": 3.0, "crown_diameter_m": 2.0},
                              geometry=[p.buffer(1.0) for p in tops.geometry], crs="EPSG:32611")
    return TreeLayers(tops, crowns)


def test_tree_statistics_count_the_trees_whose_tops_are_inside_and_top_height_is_the_100_tallest_per_ha(chm):
    trees = _trees([10, 20, 30, 40, 50, 35], [(1, 1), (5, 8), (9, 9), (15, 15), (18, 2), (30, 30)])  # the last is off the map
    stands = gpd.GeoDataFrame(geometry=[_box(0, 0, 20, 20), _box(0, 0, 10, 10)], crs="EPSG:32611")
    table = canopy.zonal_stats(chm, stands, stats=("tree_count", "trees_per_ha", "crown_area_mean", "top_height"), trees=trees)
    whole, corner = table.iloc[0], table.iloc[1]
    assert whole.tree_count == 5 and whole.trees_per_ha == pytest.approx(5 / 0.038)  # 380 m² with heights
    assert whole.top_height == pytest.approx(np.mean([50, 40, 30, 20]))  # round(100 x 0.038) = 4 tallest
    assert corner.tree_count == 3 and corner.top_height == 30.0  # round(100 x 0.01) = 1 tallest
    assert whole.crown_area_mean == 3.0


def test_trees_are_found_for_the_statistics_when_not_given(tmp_path):
    chm = canopy.__path__[0] + "/data/neon/TEAK_043_chm_1m.tif"
    with rasterio.open(chm) as src:
        plot = gpd.GeoDataFrame({"plot": ["TEAK_043"]}, geometry=[shapely.box(*src.bounds)], crs=src.crs)
    table = canopy.zonal_stats(chm, plot, stats=("tree_count", "top_height", "p95"))
    found = canopy.trees(chm)
    assert table.tree_count.iloc[0] == len(found)
    expected = np.sort(found.tops.height)[::-1][: round(100 * 0.16)].mean()  # 40 x 40 m = 0.16 ha: the 16 tallest
    assert table.top_height.iloc[0] == pytest.approx(expected)
    assert table.top_height.iloc[0] > table.height_p95.iloc[0] - 5


def test_stats_command_gives_the_structure_columns(chm, tmp_path):
    polygons = tmp_path / "stands.gpkg"
    gpd.GeoDataFrame({"stand": ["a"]}, geometry=[_box(0, 0, 20, 20)], crs="EPSG:32611").to_file(polygons)
    out = tmp_path / "stats.csv"
    result = CliRunner().invoke(cli, ["stats", str(chm), "--polygons", str(polygons), "--stats", "mean,p10,cover,structure",
                                      "--cover-threshold", "2", "--cover-threshold", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output, result.output  # a CSV's WKT column is no geometry column to warn about
    table = pd.read_csv(out)
    assert table.geometry.iloc[0].startswith("POLYGON")
    for column in ("height_mean", "height_p10", "cover_2m", "cover_5m", "gap_fraction", "tree_count", "trees_per_ha",
                   "crown_area_mean", "top_height", "forest_fraction"):
        assert column in table, column
    assert table.gap_fraction.iloc[0] == pytest.approx(12 / 380)
