"""The block engine under every analysis: two block sizes, threads here and 2 Dask workers give the same raster bytes
and the same features; a run killed (SIGKILL) in its last stage and resumed writes what an uninterrupted run writes,
with nothing at --out in between and the finished stages kept; every raster is a COG as GDAL sees it; bad maps are
refused in one sentence."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from distributed import Client, LocalCluster, get_task_stream
from forests import synthetic_forest, write_forest
from rio_cogeo.cogeo import cog_validate

import canopy
from canopy.analysis.trees import write_trees
from canopy.calibration import Calibration
from canopy.cli.main import cli
from canopy.analysis.allometry import get_allometry
from canopy.cluster import restore_environment

IDENTITY = {"canopy_model": "meta-chm-v2", "canopy_weights": "a" * 64, "canopy_head_weights": "b" * 64}
HARVEST = shapely.box(500060, 3999830, 500140, 3999900)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 200 m forest at 0.5 m (before), the same after a harvest, a map tagged with a model, and its calibration."""
    folder = tmp_path_factory.mktemp("inputs")
    before = synthetic_forest(200.0, res=0.5, seed=3)
    after = before.copy()
    inside = shapely.contains_xy(HARVEST, *np.meshgrid(after.x, after.y))
    after.values = np.where(inside, 0.3, after.values).astype(np.float32)
    tagged = write_forest(folder / "tagged.tif", before)
    with rasterio.open(tagged, "r+") as dst:
        dst.update_tags(**IDENTITY)
    calibration = folder / "calibration.json"
    Calibration(*IDENTITY.values(), ((0.0, 1.0), (10.0, 12.0), (40.0, 36.0)), 1000, (0.0, 40.0), "2026-12-06").write(calibration)
    inputs = {"before": write_forest(folder / "before.tif", before), "after": write_forest(folder / "after.tif", after),
              "tagged": tagged, "calibration": calibration, "trees": folder / "trees.gpkg"}
    write_trees(inputs["before"], inputs["trees"], allometry=get_allometry("jucker2017-gymnosperm"))
    return inputs


def _run(name: str, inputs, out: Path, **options):
    """One analysis through the library, writing into folder ``out``."""
    if name == "trees":
        return write_trees(inputs["before"], out / "trees.gpkg", **options)
    if name == "forest":
        return canopy.forest(inputs["before"], out / "forest.gpkg", **options)
    if name == "change":
        return canopy.change(inputs["before"], inputs["after"], out / "change.tif", forest_definition=canopy.ForestDefinition(),
                             **options)
    if name == "aggregate":
        return canopy.aggregate(inputs["before"], 10.0, out / "grid.tif", trees=inputs["trees"], **options)
    return canopy.apply_calibration(inputs["tagged"], inputs["calibration"], out / "calibrated.tif", **options)


ANALYSES = ("trees", "forest", "change", "apply_calibration", "aggregate")


def _features(path: Path) -> dict:
    """Each layer's rows, ordered by position, geometries normalised, numbers rounded (sums over other block cuts
    round differently in the last bits)."""
    found = {}
    for layer in gpd.list_layers(path)["name"]:
        table = gpd.read_file(path, layer=layer)
        if not isinstance(table, gpd.GeoDataFrame):  # the styles
            found[layer] = (table.drop(columns="update_time").to_dict("list"), [])
            continue
        centres = table.geometry.representative_point()
        table = table.iloc[np.lexsort((centres.x.round(3), centres.y.round(3)))].reset_index(drop=True)
        numbers = table.drop(columns="geometry").round(6).to_dict("list")
        found[layer] = (numbers, list(table.geometry.values))
    return found


def _same_features(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for layer in a:
        assert a[layer][0].keys() == b[layer][0].keys(), layer
        for column, values in a[layer][0].items():
            numeric = all(isinstance(v, (int, float)) for v in values)
            expected = pytest.approx(b[layer][0][column], rel=1e-9, abs=1e-6) if numeric else b[layer][0][column]
            assert values == expected, (layer, column)
        assert len(a[layer][1]) == len(b[layer][1]), layer
        assert all(x.equals(y) for x, y in zip(a[layer][1], b[layer][1])), layer


def _outputs(folder: Path) -> dict:
    """The run's files: rasters as bytes, vectors as features, styles as text."""
    found = {}
    for path in sorted(folder.iterdir()):
        assert not path.name.startswith("."), f"{path.name} left behind"
        found[path.name] = _features(path) if path.suffix == ".gpkg" else path.read_bytes()
    return found


def _same_outputs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith(".gpkg"):
            _same_features(a[name], b[name])
        else:
            assert a[name] == b[name], name


def _gdal_cache_mb():
    from rasterio._env import get_gdal_config

    return get_gdal_config("GDAL_CACHEMAX")


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on 127.0.0.1."""
    caller = dict(os.environ)
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as connected:
            yield connected
    finally:
        restore_environment(caller)


@pytest.mark.parametrize("name", ANALYSES)
def test_two_block_sizes_threads_and_two_dask_workers_give_the_same_outputs(inputs, client, tmp_path, name):
    runs = {}
    for label, options in (("whole", {"block_size": 4096}), ("blocks", {"block_size": 96}),
                           ("dask", {"block_size": 150, "client": client})):
        out = tmp_path / label
        out.mkdir()
        _run(name, inputs, out, **options)
        runs[label] = _outputs(out)
    _same_outputs(runs["blocks"], runs["whole"])
    _same_outputs(runs["dask"], runs["whole"])
    assert set(client.run(_gdal_cache_mb).values()) == {256}  # bounded in the workers, as for predict
    tifs = [tmp_path / "whole" / n for n in runs["whole"] if n.endswith(".tif")]
    assert len(tifs) == {"trees": 0, "forest": 1, "change": 2, "apply_calibration": 1, "aggregate": 1}[name]
    for tif in tifs:
        with rasterio.open(tif) as src:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG", tif.name
        assert cog_validate(tif, strict=True) == (True, [], []), tif.name


def test_the_outputs_are_the_analyses_answers(inputs, tmp_path):
    result = _run("change", inputs, tmp_path)
    assert result.counts["loss"][0] == 1 and shapely.box(*HARVEST.bounds).intersection(result.loss.geometry.iloc[0]).area > 0.5 * HARVEST.area
    assert 0 < result.forest_lost_ha <= HARVEST.area / 1e4
    with rasterio.open(tmp_path / "change_forest.tif") as src:
        assert src.dtypes == ("uint8",) and src.nodata == 255 and src.colormap(1)[1][:3] == (30, 120, 50)
        mask = src.read(1)
        overview = src.read(1, out_shape=(mask.shape[0] // 2, mask.shape[1] // 2))
    assert set(np.unique(mask)) <= {0, 1, 255} and set(np.unique(overview)) <= {0, 1, 255}
    with rasterio.open(tmp_path / "change.tif") as diff, rasterio.open(inputs["before"]) as b, rasterio.open(inputs["after"]) as a:
        np.testing.assert_array_equal(diff.read(1), a.read(1) - b.read(1))
    calibrated = _run("apply_calibration", inputs, tmp_path)
    with rasterio.open(inputs["tagged"]) as src:
        heights = src.read(1, masked=True).filled(np.nan)
    expected = Calibration.read(inputs["calibration"]).apply(heights)
    np.testing.assert_array_equal(calibrated.values, expected)
    assert calibrated.attrs["canopy_model"] == "meta-chm-v2" and calibrated.attrs["canopy_calibration"]


_KILLED = """
import os, signal, sys, threading
from canopy.blockwise import store

stage, kill_at, saved, one_at_a_time = sys.argv[1], int(sys.argv[2]), [], threading.Lock()
real_save = store.BlockStore.save


def save(self, name, block, arrays):  # blocks are stored on threads: one at a time here, so exactly kill_at are whole
    if name != stage:
        return real_save(self, name, block, arrays)
    with one_at_a_time:
        if len(saved) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(self, name, block, arrays)
        saved.append(block.key)


store.BlockStore.save = save
from canopy.cli.main import main

sys.argv = ["canopy", *sys.argv[3:]]
main()
"""

_COMMANDS = {  # the command, its output, and the last stage of its run
    "trees": (["trees", "{before}", "--out", "{out}/trees.gpkg"], "trees.gpkg", "trees"),
    "forest": (["forest", "{before}", "--out", "{out}/forest.gpkg"], "forest.gpkg", "final"),
    "change": (["change", "{before}", "{after}", "--out", "{out}/change.tif"], "change.tif", "pieces"),
    "apply_calibration": (["apply-calibration", "{tagged}", "{calibration}", "--out", "{out}/calibrated.tif"], "calibrated.tif",
                          "calibrated"),
    "aggregate": (["aggregate", "{before}", "--res", "10", "--trees", "{trees}", "--out", "{out}/grid.tif"], "grid.tif", "cells"),
}


@pytest.mark.parametrize("name", ANALYSES)
def test_killed_and_resumed_it_writes_what_an_uninterrupted_run_writes(inputs, tmp_path, caplog, name):
    words, output, stage = _COMMANDS[name]
    for label in ("whole", "killed"):
        out = tmp_path / label
        out.mkdir()
        args = [w.format(out=out, **inputs) for w in words] + ["--block-size", "64"]
        if label == "whole":
            assert CliRunner().invoke(cli, args).exit_code == 0
            continue
        killed = subprocess.run([sys.executable, "-c", _KILLED, stage, "3", *args], capture_output=True, text=True, timeout=600,
                                env={**os.environ, "CANOPY_OFFLINE": "1"})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert not (out / output).exists() and (out / f".{output}.partial").is_dir()
        with caplog.at_level(logging.INFO, logger="canopy.blockwise.execute"):
            resumed = CliRunner().invoke(cli, [*args, "--resume"])
        assert resumed.exit_code == 0, resumed.output
        kept = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{stage}:")]
        assert kept == [f"{stage}: 46 blocks to compute, 3 kept from an earlier run"], kept  # 7 x 7 blocks
    _same_outputs(_outputs(tmp_path / "killed"), _outputs(tmp_path / "whole"))


def test_a_resume_with_other_settings_is_refused_and_a_damaged_block_is_computed_again(inputs, tmp_path):
    args = ["forest", str(inputs["before"]), "--out", str(tmp_path / "forest.gpkg"), "--block-size", "64"]
    killed = subprocess.run([sys.executable, "-c", _KILLED, "final", "2", *args], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9
    refused = CliRunner().invoke(cli, [*args, "--resume", "--min-area-ha", "0.2"])
    assert refused.exit_code != 0 and "other settings (definition)" in refused.output and "Traceback" not in refused.output
    partial = tmp_path / ".forest.gpkg.partial"
    damaged = sorted(partial.glob("candidates.*.store.npy"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(canopy.errors.DamagedPartialWarning, match="1 damaged block"):
        resumed = canopy.forest(inputs["before"], tmp_path / "forest.gpkg", block_size=64, resume=True)
    assert resumed.polygon_count == canopy.forest(inputs["before"], block_size=64).polygon_count


def _truncated(folder: Path) -> Path:
    """A tiled, uncompressed height map whose file is cut in half: its header reads, its last blocks do not."""
    path = folder / "cut.tif"
    write_forest(path, synthetic_forest(200.0, res=0.5, seed=3))
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(compress=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _rgb(folder: Path) -> Path:
    path = folder / "ortho_rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32611",
                       transform=rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(np.full((3, 64, 64), 120, np.uint8))
    return path


@pytest.mark.parametrize("command, pattern", [
    (["trees", "{cut}", "--out", "{out}/t.gpkg"], r"Map .*cut.tif cannot be read at rows \d+-\d+, columns \d+-\d+"),
    (["forest", "{cut}", "--out", "{out}/f.gpkg"], r"Map .*cut.tif cannot be read at rows"),
    (["trees", "{rgb}", "--out", "{out}/t.gpkg"], r"Map .*ortho_rgb.tif has 3 bands of uint8: it looks like imagery, not heights"),
    (["forest", "{rgb}", "--out", "{out}/f.gpkg"], r"has 3 bands of uint8: it looks like imagery"),
    (["change", "{rgb}", "{before}", "--out", "{out}/c.tif"], r"has 3 bands of uint8: it looks like imagery"),
    (["apply-calibration", "{rgb}", "{calibration}", "--out", "{out}/c.tif"], r"has 3 bands of uint8"),
    (["calibrate", "{before}", "{rgb}", "--out", "{out}/c.json"], r"The reference .*ortho_rgb.tif has 3 bands of uint8"),
])
def test_bad_maps_are_refused_in_one_sentence_and_nothing_is_written(inputs, tmp_path, command, pattern):
    out = tmp_path / "out"
    out.mkdir()
    args = [w.format(out=out, cut=_truncated(tmp_path), rgb=_rgb(tmp_path), **inputs) for w in command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert re.search(pattern, result.output), result.output
    assert list(out.iterdir()) == [] or all(p.name.startswith(".") and p.suffix == ".partial" for p in out.iterdir())


@pytest.mark.parametrize("pixels", [((3, 3), (4, 4)), ((3, 4), (4, 3))], ids=["down-right", "down-left"])
def test_a_part_that_crosses_a_block_corner_diagonally_is_one_part(pixels):
    from canopy.blockwise.layout import BlockLayout
    from canopy.blockwise.parts import BlockParts, label, part_summary

    mask = np.zeros((8, 8), bool)
    for row, col in pixels:
        mask[row, col] = True  # 8-neighbours, each in another block of 4 x 4
    layout = BlockLayout(8, 8, rasterio.Affine.identity(), 4)
    parts = BlockParts()
    counts = {}
    for block in layout.blocks:
        labels, count = label(mask[block.row : block.row + block.height, block.col : block.col + block.width])
        counts[layout.index(block)] = count
        parts.add(layout.index(block), part_summary(labels, count))
    parts.join()
    assert sorted(parts.sizes().tolist()) == [2]
    ids = {int(parts.ids(index, count)[1]) for index, count in counts.items() if count}
    assert len(ids) == 1


def test_the_stand_statistics_on_dask_are_those_computed_here(inputs, client):
    stands = gpd.GeoDataFrame({"stand": ["west", "east"]}, geometry=[shapely.box(500000, 3999800, 500080, 4000000),
                                                                     shapely.box(500090, 3999850, 500200, 3999990)],
                               crs="EPSG:32611")
    stats = ("mean", "tree_count", "top_height", "forest_fraction")
    here = canopy.zonal_stats(inputs["before"], stands, stats=stats)
    with get_task_stream(client) as stream:
        there = canopy.zonal_stats(inputs["before"], stands, stats=stats, client=client)
    ran = {str(task["key"]).split("-")[1] for task in stream.data}
    assert {"trees", "candidates", "final"} <= ran, ran  # the trees and the forest mask were computed on the workers
    assert here.drop(columns="geometry").equals(there.drop(columns="geometry"))
    assert (here.tree_count > 10).all() and 0 < here.forest_fraction.iloc[1] <= 1
