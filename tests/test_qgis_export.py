"""canopy export qgis: a folder that opens finished in QGIS, checked by parsing it and, where PyQGIS is
installed (the distribution's python3-qgis), by opening and rendering it in a real, headless QGIS."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import box

import canopy
from canopy.cli.main import cli
from rasters import NEON

CHM = NEON / "TEAK_049_chm_1m.tif"  # NEON's lidar canopy height: real heights to style
SYSTEM_PYTHON = "/usr/bin/python3"


def _stands(tmp_path: Path) -> Path:
    """Four quarter-plot stands in lon/lat, as a GeoPackage."""
    with rasterio.open(CHM) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    cx, cy = (left + right) / 2, (bottom + top) / 2
    quarters = [box(left, cy, cx, top), box(cx, cy, right, top), box(left, bottom, cx, cy), box(cx, bottom, right, cy)]
    path = tmp_path / "stands.gpkg"
    gpd.GeoDataFrame({"stand": ["NW", "NE", "SW", "SE"]}, geometry=quarters, crs=crs).to_crs(4326).to_file(path, driver="GPKG")
    return path


def _opened_in_qgis(project: Path, tmp_path: Path) -> dict:
    """What a real, headless QGIS reports of a project it opened and rendered (tests/qgis_check.py)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([SYSTEM_PYTHON, str(Path(__file__).with_name("qgis_check.py")), str(project), str(tmp_path / "render.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture()
def exported(tmp_path):
    out = tmp_path / "project"
    result = CliRunner().invoke(cli, ["export", "qgis", str(CHM), "--polygons", str(_stands(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_folder_holds_the_map_its_style_the_statistics_and_a_relative_project(exported, tmp_path):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["TEAK_049_chm_1m.qgs", "TEAK_049_chm_1m.qml", "TEAK_049_chm_1m.tif", "stands_stats.gpkg"]
    project = ET.parse(exported / "TEAK_049_chm_1m.qgs").getroot()
    assert project.find("./properties/Paths/Absolute").text == "false"
    sources = [e.text for e in project.iter("datasource")]
    assert sources == ["./stands_stats.gpkg|layername=stands", "./TEAK_049_chm_1m.tif"]
    legend = project.find(".//maplayer[@type='raster']//rampLegendSettings")
    assert legend.get("suffix") == " m"
    table = gpd.read_file(exported / "stands_stats.gpkg", layer="stands")
    expected = canopy.zonal_stats(CHM, _stands(tmp_path)).to_crs(table.crs)
    np.testing.assert_allclose(table["height_mean"], expected["height_mean"])
    assert list(table["stand"]) == ["NW", "NE", "SW", "SE"] and table.crs == rasterio.open(CHM).crs
    with sqlite3.connect(exported / "stands_stats.gpkg") as db:
        (name, column, default, qml), = db.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles")
    assert (name, column, default) == ("stands", "geom", 1) and "height_mean" in qml and "singleSymbol" in qml


def _has_pyqgis() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_pyqgis(), reason="PyQGIS is not installed (apt-get install python3-qgis); .ci/run installs it")
def test_the_project_opens_styled_in_a_real_qgis_after_the_folder_is_moved(exported, tmp_path):
    moved = tmp_path / "sent" / "elsewhere"
    shutil.copytree(exported, moved)  # as zipped and sent: only relative paths may work
    shutil.rmtree(exported)
    report = _opened_in_qgis(moved / "TEAK_049_chm_1m.qgs", tmp_path)
    assert report["read"] and report["project_crs"] == "EPSG:32611"
    raster, = [layer for layer in report["layers"] if layer["name"] == "canopy height (m)"]
    stands, = [layer for layer in report["layers"] if layer["name"] == "stands"]
    for layer in (raster, stands):
        assert layer["valid"] and layer["crs"] == "EPSG:32611" and str(moved) in layer["source"]
    with rasterio.open(moved / "TEAK_049_chm_1m.tif") as src:
        np.testing.assert_allclose(raster["extent"], list(src.bounds), atol=1e-6)
    assert raster["renderer"] == "singlebandpseudocolor" and raster["legend"] and all(label.endswith(" m") for label in raster["legend"])
    assert {"height_mean", "cover", "area_ha"} <= set(stands["fields"]) and stands["features"] == 4 and stands["labels"]
    assert stands["default_style_outline"] == "#c81e1e"  # the GeoPackage's own default style, without the project
    assert report["greenish_pixels"] > 0.3 * report["sampled_pixels"]  # canopy drawn in the ramp's greens


@pytest.mark.skipif(not _has_pyqgis(), reason="PyQGIS is not installed (apt-get install python3-qgis); .ci/run installs it")
def test_trees_and_forest_open_styled_in_a_real_qgis(tmp_path):
    trees, forest = tmp_path / "trees.gpkg", tmp_path / "forest.gpkg"
    for args in (["trees", str(CHM), "--out", str(trees)],
                 ["forest", str(CHM), "--out", str(forest), "--min-area-ha", "0.05"]):  # the plot is 0.16 ha: a small-area definition
        assert CliRunner().invoke(cli, args).exit_code == 0
    out = tmp_path / "project"
    result = CliRunner().invoke(cli, ["export", "qgis", str(CHM), "--trees", str(trees), "--forest", str(forest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {"trees.gpkg", "forest.gpkg", "forest.tif"} <= {p.name for p in out.iterdir()}
    layers = {layer["name"]: layer for layer in _opened_in_qgis(out / "TEAK_049_chm_1m.qgs", tmp_path)["layers"]}
    assert {"tops", "crowns", "forest", "forest / non-forest", "canopy height (m)"} <= set(layers)
    assert all(layer["valid"] for layer in layers.values())
    found = canopy.trees(CHM)
    assert layers["tops"]["features"] == layers["crowns"]["features"] == len(found) > 10
    assert layers["forest"]["features"] >= 1 and layers["forest / non-forest"]["renderer"] == "paletted"
    assert layers["forest / non-forest"]["legend"] == ["non-forest", "forest"]
    assert layers["crowns"]["default_style_outline"] == "#ffbe00" and layers["tops"]["renderer"] == "singleSymbol"


@pytest.mark.skipif(not _has_pyqgis(), reason="PyQGIS is not installed (apt-get install python3-qgis); .ci/run installs it")
def test_the_uncertainty_and_interval_beside_a_map_open_styled_and_hidden_in_a_real_qgis(tmp_path):
    chm = tmp_path / "height.tif"
    shutil.copyfile(CHM, chm)
    with rasterio.open(CHM) as src:
        profile, heights = src.profile, src.read(1, masked=True).filled(np.nan)
    profile.update(nodata=np.nan)
    for kind, values in (("uncertainty", 0.1 + 0.05 * heights), ("lower", heights * 0.8), ("upper", heights * 1.2)):
        with rasterio.open(tmp_path / f"height.{kind}.tif", "w", **profile) as dst:
            dst.write(values.astype(np.float32), 1)
    out = tmp_path / "project"
    assert CliRunner().invoke(cli, ["export", "qgis", str(chm), "--out", str(out)]).exit_code == 0
    assert {"height.uncertainty.tif", "height.uncertainty.qml", "height.lower.tif", "height.upper.tif"} <= {p.name for p in out.iterdir()}
    assert "#3b0f70" in (out / "height.uncertainty.qml").read_text()
    text = (out / "height.qgs").read_text()
    assert text.count('checked="Qt::Unchecked"') == 3  # the heights stay in sight
    report = _opened_in_qgis(out / "height.qgs", tmp_path)
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert {"uncertainty, 1 std (m)", "lower bound of the prediction interval (m)", "canopy height (m)"} <= set(layers)
    assert all(layer["valid"] for layer in layers.values())
    assert layers["uncertainty, 1 std (m)"]["renderer"] == "singlebandpseudocolor"
    assert layers["uncertainty, 1 std (m)"]["legend"][-1] == "2 m"  # its own range: a 98th percentile under 2 m rounds up to 2
    assert report["greenish_pixels"] > 0.5 * report["sampled_pixels"]  # the heights' greens show, not the hidden layers


@pytest.mark.skipif(not _has_pyqgis(), reason="PyQGIS is not installed (apt-get install python3-qgis); .ci/run installs it")
def test_trees_graduated_by_biomass_and_a_grid_open_styled_in_a_real_qgis(tmp_path):
    trees, grid = tmp_path / "trees.gpkg", tmp_path / "grid.tif"
    for args in (["trees", str(CHM), "--out", str(trees), "--allometry", "jucker2017-gymnosperm"],
                 ["aggregate", str(CHM), "--res", "10", "--trees", str(trees), "--out", str(grid)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    out = tmp_path / "project"
    result = CliRunner().invoke(cli, ["export", "qgis", str(CHM), "--trees", str(trees), "--grid", str(grid), "--out", str(out)])
    assert result.exit_code == 0, result.output
    layers = {layer["name"]: layer for layer in _opened_in_qgis(out / "TEAK_049_chm_1m.qgs", tmp_path)["layers"]}
    assert layers["tops"]["renderer"] == "graduatedSymbol" and layers["tops"]["default_style_outline"] is None
    assert layers["per-cell grid (grid)"]["valid"] and layers["per-cell grid (grid)"]["renderer"] == "singlebandpseudocolor"
    assert layers["per-cell grid (grid)"]["legend"][-1].endswith(" m")


def test_a_new_export_removes_what_a_killed_one_left_of_every_file(tmp_path):
    """Temporaries of each file the project holds, copied trees and forest included, are removed by the next export."""
    trees, forest = tmp_path / "trees.gpkg", tmp_path / "forest.gpkg"
    for args in (["trees", str(CHM), "--out", str(trees)], ["forest", str(CHM), "--out", str(forest), "--min-area-ha", "0.05"]):
        assert CliRunner().invoke(cli, args).exit_code == 0
    out = tmp_path / "project"
    out.mkdir()
    names = [CHM.name, CHM.with_suffix(".qml").name, CHM.with_suffix(".qgs").name, "stands_stats.gpkg", "trees.gpkg", "forest.gpkg",
             "forest.tif"]
    for name in names:  # as atomic_path names its temporaries
        (out / f".{name}.k1ll3d.tmp{Path(name).suffix}").write_bytes(b"half")
    result = CliRunner().invoke(cli, ["export", "qgis", str(CHM), "--polygons", str(_stands(tmp_path)), "--trees", str(trees),
                                      "--forest", str(forest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
