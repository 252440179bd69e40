"""Trees: tops and crowns the same in blocks as whole, right on hand-made crowns, scored like NeonTreeEvaluation on the NEON plots."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from click.testing import CliRunner
from forests import synthetic_forest, write_forest

import canopy
from canopy.accuracy.tree_matching import box_iou, match_boxes
from canopy.cli.main import cli
from canopy.errors import HeightMapError

DATA = canopy.__path__[0] + "/data"


@pytest.fixture(scope="module")
def forest() -> xr.DataArray:
    return synthetic_forest(size_m=200.0)


def _same(a: canopy.analysis.trees.TreeLayers, b) -> None:
    np.testing.assert_array_equal(a.tops.tree_id, b.tops.tree_id)
    np.testing.assert_array_equal(a.tops.height, b.tops.height)
    assert all(x.equals_exact(y, 0) for x, y in zip(a.crowns.geometry, b.crowns.geometry))
    assert all(x.equals_exact(y, 0) for x, y in zip(a.tops.geometry, b.tops.geometry))


def test_a_map_cut_into_blocks_gives_the_trees_of_the_whole_map(forest):
    whole = canopy.trees(forest, block_size=100_000)
    assert 150 < len(whole) < 700  # 1000 domes placed, a third of the area cleared, many overtopped
    for block_size in (48, 131):
        _same(whole, canopy.trees(forest, block_size=block_size))


def test_two_crowns_give_two_trees_at_their_tops_and_a_bump_on_one_is_no_tree():
    res = 0.25
    yy, xx = (np.mgrid[0:120, 0:160] + 0.5) * res

    def dome(x, y, h, r):
        d = np.hypot(xx - x, yy - y)
        return np.where(d < r, h * (1 - 0.5 * (d / r) ** 2), 0.0)
    chm = np.maximum(dome(10, 15, 30, 5), dome(28, 15, 20, 4)) + np.where(np.hypot(xx - 11.5, yy - 15) < 0.3, 0.3, 0)
    chm = np.maximum(chm, 0.1 * ((xx * 7 + yy * 3) % 1)).astype(np.float32)  # sub-metre ground texture: no tree
    data = xr.DataArray(chm, dims=("y", "x")).rio.write_crs("EPSG:32611").rio.write_transform(
        rasterio.Affine(res, 0, 1000.0, 0, -res, 2000.0))
    found = canopy.trees(data)
    assert len(found) == 2
    tops = found.tops.sort_values("height", ascending=False)
    assert tops.height.iloc[0] == pytest.approx(30.0, abs=0.05) and tops.height.iloc[1] == pytest.approx(20.0, abs=0.05)
    assert tops.geometry.iloc[0].distance(shapely.Point(1010, 2000 - 15)) < 0.3
    assert tops.geometry.iloc[1].distance(shapely.Point(1028, 2000 - 15)) < 0.3
    crowns = found.crowns.set_index("tree_id").loc[tops.tree_id]
    # a dome of height h and radius r is above 0.65 h within r * sqrt(0.7); the crown ends there, or where the other begins
    assert crowns.crown_area_m2.iloc[0] == pytest.approx(np.pi * 0.7 * 5**2, rel=0.15)
    assert not crowns.geometry.iloc[0].overlaps(crowns.geometry.iloc[1])
    for top, crown in zip(tops.geometry, crowns.geometry):
        assert crown.contains(top)
    np.testing.assert_allclose(crowns.crown_diameter_m, 2 * np.sqrt(crowns.crown_area_m2 / np.pi))


def test_every_crown_holds_its_top_whose_height_is_the_maps_and_whose_id_is_its_pixel():
    path = f"{DATA}/neon/TEAK_043_chm_1m.tif"
    found = canopy.trees(path)
    with rasterio.open(path) as src:
        chm = src.read(1)
        width = src.width
        for tree_id, height, top in zip(found.tops.tree_id, found.tops.height, found.tops.geometry):
            row, col = src.index(top.x, top.y)
            assert tree_id == row * width + col and height == chm[row, col] >= 2.0
    assert all(c.contains(t) for c, t in zip(found.crowns.geometry, found.tops.geometry))
    assert not any(a.overlaps(b) for i, a in enumerate(found.crowns.geometry) for b in found.crowns.geometry[i + 1 :])


def test_the_same_forest_at_half_the_pixel_size_gives_about_the_same_trees(forest):
    fine = forest.rio.reproject(forest.rio.crs, resolution=0.25, resampling=rasterio.enums.Resampling.bilinear)
    coarse, detailed = canopy.trees(forest), canopy.trees(fine)
    assert abs(len(detailed) - len(coarse)) < 0.1 * len(coarse)
    assert detailed.crowns.crown_area_m2.median() == pytest.approx(coarse.crowns.crown_area_m2.median(), rel=0.15)


def test_trees_in_polygons_only_and_polygons_off_the_map_are_refused(forest, tmp_path):
    stand = shapely.box(500100, 3999900, 500180, 3999980)
    polygons = gpd.GeoDataFrame({"name": ["a"]}, geometry=[stand], crs="EPSG:32611").to_crs("EPSG:4326")
    inside = canopy.trees(forest, polygons)
    every = canopy.trees(forest)
    expected = every.tops[every.tops.within(stand)]
    np.testing.assert_array_equal(inside.tops.tree_id, expected.tree_id)
    assert (inside.tops.polygon == 0).all() and len(inside) > 20
    far = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32611")
    with pytest.raises(HeightMapError, match="No polygon of the table overlaps map"):
        canopy.trees(forest, far)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(crs=None), "has no CRS"),
        (dict(crs="EPSG:4326"), "is in degrees"),
        (dict(nodata=None), "declares no no-data value"),
        (dict(res=3.0), "3 m pixels, too coarse for tree crowns"),
    ],
)
def test_a_map_trees_cannot_come_from_is_refused_in_one_sentence(tmp_path, change, message):
    res = change.get("res", 0.5)
    profile = dict(driver="GTiff", width=20, height=20, count=1, dtype="float32",
                   transform=rasterio.Affine(res, 0, 500000.0, 0, -res, 4000000.0))
    if "crs" not in change or change["crs"]:
        profile["crs"] = change.get("crs", "EPSG:32611")
    if change.get("nodata", 0.0) is not None:
        profile["nodata"] = -9999.0
    path = tmp_path / "chm.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 20, 20), 10.0, np.float32))
    with pytest.raises(HeightMapError, match=message):
        canopy.trees(path)
    result = CliRunner().invoke(cli, ["trees", str(path), "--out", str(tmp_path / "t.gpkg")])
    assert result.exit_code == 1 and message.split(" ")[0] in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.gpkg").exists()


def test_boxes_are_matched_one_to_one_by_total_iou_not_greedily():
    reference = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], float)
    # a greedy matcher gives detected 0 its best (reference 1, IoU 0.67) and leaves detected 1 with nothing above 0.4
    detected = np.array([[5, 0, 15, 10], [0, 0, 9, 10]], float)
    assert box_iou(detected, reference)[0].argmax() == 1
    pairs = match_boxes(detected, reference)
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 1), (1, 0)]
    assert match_boxes(np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 4]], float)) == []  # IoU 0.4 is not above 0.4


def test_reference_crowns_scored_against_themselves_and_shifted(tmp_path):
    truth = gpd.read_file(f"{DATA}/trees/teak_trees.geojson")
    truth = truth[truth["plot"].isin(["TEAK_043", "TEAK_044"])]
    perfect = canopy.evaluate_trees(truth, truth)
    assert perfect.precision == perfect.recall == 1.0 and [p.plot for p in perfect.plots] == ["TEAK_043", "TEAK_044"]
    shifted = canopy.evaluate_trees(truth.assign(geometry=truth.translate(xoff=1.5)), truth)
    assert 0 < shifted.recall < 0.9 and shifted.table().iloc[-1]["plot"] == "mean"


def test_default_trees_on_the_neon_lidar_plots_reach_the_benchmarks_lidar_baseline():
    """The defaults' figures in docs/trees.md: on the 0.5 m CHMs made from the plots' point clouds, mean
    precision 0.35 and recall 0.48, at least the NeonTreeEvaluation lidar baseline (0.34 / 0.47); on the
    1 m CHMs, 0.34 / 0.37."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from tree_accuracy import plot_scores

    fine = plot_scores(canopy.TreeParameters(), "0.5m").iloc[-1]
    assert fine.precision >= 0.34 and fine.recall >= 0.47, fine.to_dict()
    coarse = plot_scores(canopy.TreeParameters(), "1m").iloc[-1]
    assert coarse.precision >= 0.33 and coarse.recall >= 0.36, coarse.to_dict()


def test_cli_writes_styled_layers_and_scores_them(tmp_path):
    out = tmp_path / "trees.gpkg"
    chm = f"{DATA}/neon/TEAK_043_chm_1m.tif"
    result = CliRunner().invoke(cli, ["trees", chm, "--out", str(out), "--block-size", "16", "--min-height", "3"])
    assert result.exit_code == 0, result.output
    tops, crowns = gpd.read_file(out, layer="tops"), gpd.read_file(out, layer="crowns")
    assert len(tops) == len(crowns) > 10 and tops.height.min() >= 3.0 and f"({len(tops)} trees:" in result.output
    assert sorted(tops.tree_id) == sorted(canopy.trees(chm, parameters=canopy.TreeParameters(min_height=3)).tops.tree_id)
    import sqlite3

    with sqlite3.connect(out) as db:
        styles = dict(db.execute("SELECT f_table_name, styleQML FROM layer_styles WHERE useAsDefault = 1").fetchall())
    assert set(styles) == {"tops", "crowns"} and 'scale_linear("height"' in styles["tops"]
    scored = CliRunner().invoke(cli, ["evaluate-trees", str(out), f"{DATA}/trees/teak_trees.geojson", "--csv", str(tmp_path / "s.csv")])
    assert scored.exit_code == 0 and "TEAK_043" in scored.output
    assert (tmp_path / "s.csv").read_text().splitlines()[1].startswith("TEAK_043,")
    refused = CliRunner().invoke(cli, ["trees", chm, "--out", str(tmp_path / "trees.shp")])
    assert refused.exit_code != 0 and "must end in .gpkg" in refused.output and not (tmp_path / "trees.shp").exists()


def test_trees_on_a_dask_cluster_are_the_local_ones(forest, tmp_path):
    from distributed import Client, LocalCluster

    path = write_forest(tmp_path / "forest.tif", forest)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        remote = canopy.trees(path, block_size=100, client=client)
        worked = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count)
    assert sum(count > 0 for count in worked.values()) >= 1  # blocks went to the worker processes, pickled there and back
    assert len(remote) > 150  # the forest's trees, not two empty tables
    _same(canopy.trees(path, block_size=100), remote)
