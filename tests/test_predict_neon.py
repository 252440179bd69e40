"""canopy predict on a real NEON orthophoto: grid, COG structure, nodata, tags and the QGIS style."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate

from canopy.cli.main import cli
from canopy.errors import AmbiguousNodataWarning
from canopy.imagery import GeoTiffSource
from rasters import NEON

RGB = NEON / "TEAK_043_rgb.tif"


@pytest.fixture(scope="module")
def neon_run(tmp_path_factory):
    """One CLI run over a bbox in EPSG:4326 a little larger than the plot, at 0.05 m (800+ px, so overviews)."""
    with rasterio.open(RGB) as src:
        plot = src.bounds
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *plot)
    pad = 0.00004  # about 4 m of bbox without imagery on each side
    bbox = f"{west - pad},{south - pad},{east + pad},{north + pad}"
    out = tmp_path_factory.mktemp("neon") / "teak043.tif"
    result = CliRunner().invoke(
        cli,
        ["predict", "--imagery", str(RGB), "--bbox", bbox, "--out", str(out), "--model", "dinov2_vits14",
         "--weights", "random", "--res", "0.05", "--quicklook", "--quiet"],
    )
    return result, out, plot, bbox


def test_run_succeeds_and_reports(neon_run):
    result, out, _, _ = neon_run
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    assert "nodata=255" in result.output and "reads pixels of 255 as data" in result.output
    assert f"wrote {out}" in result.output


def test_grid_crs_and_alignment(neon_run):
    _, out, plot, bbox = neon_run
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32611
        assert dst.res == (0.05, 0.05)
        left, bottom, right, top = dst.bounds
        assert round(left / 0.05, 6).is_integer() and round(top / 0.05, 6).is_integer()
        requested = transform_bounds("EPSG:4326", dst.crs, *map(float, bbox.split(",")), densify_pts=21)
        assert left <= requested[0] and bottom <= requested[1] and right >= requested[2] and top >= requested[3]
        assert right - left < requested[2] - requested[0] + 0.1


def test_cog_structure(neon_run):
    _, out, _, _ = neon_run
    assert cog_validate(out, strict=True) == (True, [], [])
    with rasterio.open(out) as dst:
        assert dst.block_shapes == [(512, 512)]
        assert dst.overviews(1), "no overviews"
        structure = dst.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE" and structure["PREDICTOR"] == "3"
        assert dst.dtypes == ("float32",) and np.isnan(dst.nodata)


def test_nan_outside_the_imagery_and_none_inside(neon_run):
    _, out, plot, _ = neon_run
    with rasterio.open(out) as dst:
        data = dst.read(1)
        rows, cols = np.mgrid[0 : dst.height, 0 : dst.width]
        xs, ys = rasterio.transform.xy(dst.transform, rows.ravel(), cols.ravel())
    xs, ys = np.asarray(xs).reshape(data.shape), np.asarray(ys).reshape(data.shape)
    inside = (xs > plot.left) & (xs < plot.right) & (ys > plot.bottom) & (ys < plot.top)
    assert inside.sum() == 800 * 800
    assert not np.isnan(data[inside]).any()
    assert np.isnan(data[~inside]).all() and (~inside).sum() > 0
    assert (data[inside] >= 0).all()


def test_tags_and_qml_sidecar(neon_run):
    _, out, _, _ = neon_run
    with rasterio.open(out) as dst:
        tags = dst.tags()
    assert tags["canopy_model"] == "dinov2_vits14"
    assert tags["canopy_weights"] == "random(seed=0)"
    assert tags["canopy_chip_size"] == "224" and tags["canopy_overlap"] == "56"
    assert tags["canopy_version"] and tags["units"] == "m"
    qml = ET.parse(out.with_suffix(".qml")).getroot()
    renderer = qml.find("./pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    items = renderer.findall(".//colorrampshader/item")
    assert len(items) >= 5 and items[0].get("label") == "0 m" and items[-1].get("label").endswith(" m")
    legend = renderer.find(".//colorrampshader/rampLegendSettings")
    assert legend is not None and legend.get("suffix") == " m" and legend.get("useContinuousLegend") == "1"
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saturated_pixels_stay_data_and_the_rule_is_said():
    with pytest.warns(AmbiguousNodataWarning, match="reads pixels of 255 as data"):
        source = GeoTiffSource(RGB)
    with source:
        from canopy.grid import snap_grid

        patch = source.read(snap_grid(source.bounds, source.crs, 0.1))
    assert patch.valid.all()
    assert (patch.rgb == 1.0).all(axis=0).sum() > 1000
