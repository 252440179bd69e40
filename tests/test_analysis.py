"""The analysis layer: zonal statistics against hand computations, cover, height classes, plots,
netCDF/Zarr round trips of a predicted map, and `canopy stats`."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import box

import canopy
from canopy.analysis.zonal import PolygonOutsideWarning, weighted_quantile
from canopy.cli.main import cli
from canopy.errors import EvaluationError
from canopy.prediction import RunSummary
from rasters import NEON

X0, Y0 = 300000.0, 4100004.0
HEIGHTS = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, np.nan, 16]], np.float32)


@pytest.fixture()
def chm(tmp_path):
    """A 4 x 4 map of 1 m pixels in UTM 11N, one pixel without height."""
    path = tmp_path / "chm.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32", crs="EPSG:32611",
                       transform=Affine(1, 0, X0, 0, -1, Y0), nodata=np.nan) as dst:
        dst.write(HEIGHTS, 1)
    return path


def _stands() -> gpd.GeoDataFrame:
    """Three polygons, given in lon/lat: one inside, one straddling the map's edge over the pixel without height, one outside."""
    shapes = [box(X0, Y0 - 1.5, X0 + 1.5, Y0), box(X0 + 2, Y0 - 4, X0 + 5, Y0 - 3), box(X0 + 10, Y0 + 10, X0 + 11, Y0 + 11)]
    return gpd.GeoDataFrame({"stand": ["inside", "edge", "outside"]}, geometry=shapes, crs="EPSG:32611").to_crs(4326)


def test_zonal_statistics_match_hand_computations(chm):
    with pytest.warns(PolygonOutsideWarning, match="1 of 3 polygons lie outside the map"):
        table = canopy.zonal_stats(chm, _stands(), cover_threshold=5.0)
    assert list(table["stand"]) == ["inside", "edge", "outside"] and table.crs.to_epsg() == 4326
    inside, edge, outside = (table.iloc[i] for i in range(3))
    # inside: pixels 1 (whole), 2 and 5 (halves), 6 (a quarter): weights 1, .5, .5, .25
    assert inside["height_mean"] == pytest.approx((1 + 1 + 2.5 + 1.5) / 2.25, rel=1e-6)
    assert inside["height_median"] == 2 and inside["height_p95"] == 6 and inside["height_max"] == 6
    assert inside["cover"] == pytest.approx(0.25 / 2.25, rel=1e-6)  # only pixel 6 is taller than 5 m
    assert inside["valid_fraction"] == pytest.approx(1) and inside["inside_fraction"] == pytest.approx(1, rel=1e-6)
    assert inside["area_m2"] == pytest.approx(2.25, rel=1e-3) and inside["area_ha"] == pytest.approx(2.25e-4, rel=1e-3)
    # edge: 3 m² of polygon, 2 m² over the map (the pixel without height and pixel 16)
    assert edge["height_mean"] == pytest.approx(16, rel=1e-6) and edge["cover"] == pytest.approx(1, rel=1e-6)
    assert edge["valid_fraction"] == pytest.approx(0.5, rel=1e-6) and edge["inside_fraction"] == pytest.approx(2 / 3, rel=1e-3)
    assert np.isnan(outside["height_mean"]) and outside["inside_fraction"] == 0 and outside["area_m2"] > 0


def test_zonal_statistics_are_the_same_from_a_path_an_open_map_and_an_array_in_memory(chm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolygonOutsideWarning)
        from_path = canopy.zonal_stats(chm, _stands(), stats=("mean", "p95"))
        lazy = canopy.zonal_stats(canopy.open(chm, chunks={"x": 2, "y": 2}), _stands(), stats=("mean", "p95"))
        memory = canopy.open(chm).load()
        memory.encoding = {}
        in_memory = canopy.zonal_stats(memory, _stands(), stats=("mean", "p95"))
    assert "height_median" not in from_path
    for other in (lazy, in_memory):
        np.testing.assert_allclose(other["height_mean"], from_path["height_mean"])
        np.testing.assert_allclose(other["height_p95"], from_path["height_p95"])
    with pytest.raises(EvaluationError, match="not among mean, median, p95, max, cover"):
        canopy.zonal_stats(chm, _stands(), stats=("mode",))


def test_weighted_quantile_is_the_first_value_whose_cumulative_weight_reaches_q():
    values, weights = np.array([5.0, 1.0, 3.0]), np.array([1.0, 1.0, 2.0])
    assert weighted_quantile(values, weights, 0.25) == 1.0
    assert weighted_quantile(values, weights, 0.5) == 3.0
    assert weighted_quantile(values, weights, 0.76) == 5.0


def test_cover_and_height_classes(chm):
    heights = canopy.open(chm)
    cover = canopy.cover(heights, threshold=5.0)
    assert float(cover.mean()) == pytest.approx(10 / 15) and np.isnan(cover.values[3, 2])
    classes = canopy.height_classes(heights, bins=(0, 2, 5, 10))
    assert classes.attrs["labels"] == "0-2 m; 2-5 m; 5-10 m; 10+ m"
    np.testing.assert_array_equal(classes.values[0], [0, 1, 1, 1])
    assert classes.values[1, 0] == 2 and classes.values[2, 1] == 3 and classes.values[3, 2] == -1
    assert classes.dtype == np.int8 and classes.rio.crs.to_epsg() == 32611


def test_plot_draws_the_ramp_a_colour_bar_a_scale_bar_and_says_what_the_heights_are(chm):
    import matplotlib

    matplotlib.use("Agg")  # the test has no screen; notebooks draw inline
    heights = canopy.open(chm)
    assert "(not predicted by canopy)" in canopy.plot(heights).get_title()
    heights.attrs.update(canopy_model="dinov2_vits14", canopy_weights="random(seed=0)", canopy_head_weights="random(seed=0)")
    ax = canopy.plot(heights)
    assert "random weights" in ax.get_title()
    assert ax.images and ax.images[0].get_clim() == (0, 20)  # the 98th percentile (15.7 m) rounded up to 5 m, as the QGIS style
    assert any(t.get_text() == "0.5 m" for t in ax.texts)  # scale bar: a round length near a fifth of the 4 m width
    assert len(ax.figure.axes) == 2  # the map and its colour bar
    ax.figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
    assert ticks and all("e" not in t and "+" not in t for t in ticks)  # plain coordinates, no offset or scientific notation
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.get_xlabel().startswith("easting (m), EPSG:32611")
    heights.attrs["canopy_head_weights"] = "0" * 64
    assert "(random backbone, trained head: not canopy's accuracy)" in canopy.plot(heights).get_title()
    heights.attrs["canopy_weights"] = "1" * 64
    assert canopy.plot(heights).get_title().endswith("(predicted by dinov2_vits14)")


def test_plot_of_classes_names_each_class_in_a_legend(chm):
    import matplotlib

    matplotlib.use("Agg")
    classes = canopy.height_classes(canopy.open(chm), bins=(0, 5, 10))
    ax = canopy.plot(classes, title="classes")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["0-5 m", "5-10 m", "10+ m"]
    shown = ax.images[0].get_array()
    assert sorted(np.unique(shown.compressed())) == [0, 1, 2] and shown.mask.sum() == 1  # the pixel without height


def test_a_predicted_map_round_trips_through_netcdf_and_zarr(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        height = canopy.predict(NEON / "TEAK_043_rgb.tif", model="dinov2_vits14", weights="random", res=1.0, chip_size=28,
                                block_size=16, out=tmp_path / "map.tif")
    summary = RunSummary.from_attrs(height.attrs)
    assert all(isinstance(v, (str, int, float, np.number)) for v in height.attrs.values())
    height.to_netcdf(tmp_path / "map.nc")
    height.to_zarr(tmp_path / "map.zarr")
    for store in (tmp_path / "map.nc", tmp_path / "map.zarr"):
        back = xr.open_dataset(store, decode_coords="all")["canopy_height"]  # "all": the CRS comes back as a coordinate
        np.testing.assert_array_equal(back.values, height.values)
        assert back.rio.crs == height.rio.crs
        assert RunSummary.from_attrs(back.attrs) == summary and back.attrs["units"] == "m"
        assert back.attrs["canopy_model"] == "dinov2_vits14"
    lazy = canopy.open(tmp_path / "map.tif", chunks="auto")
    import dask.array

    assert isinstance(lazy.data, dask.array.Array) and lazy.rio.crs == height.rio.crs
    np.testing.assert_array_equal(lazy.values, height.values)


def test_stats_command_prints_and_writes_tables(chm, tmp_path):
    polygons = tmp_path / "stands.gpkg"
    _stands().to_file(polygons, driver="GPKG")
    printed = CliRunner().invoke(cli, ["stats", str(chm), "--polygons", str(polygons)])
    assert printed.exit_code == 0, printed.output
    assert "height_mean" in printed.output and "inside" in printed.output
    for name in ("stands_out.gpkg", "stands_out.csv", "stands_out.parquet"):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["stats", str(chm), "--polygons", str(polygons), "--out", str(out), "--cover-threshold", "10"])
        assert result.exit_code == 0, result.output
        table = gpd.read_file(out) if name.endswith(".gpkg") else (gpd.read_parquet(out) if name.endswith(".parquet") else None)
        if table is not None:
            assert list(table["stand"]) == ["inside", "edge", "outside"] and table.crs.to_epsg() == 4326
            assert table["cover"].iloc[0] == 0
        else:
            assert out.read_text().splitlines()[0].startswith("stand,")
    bad = CliRunner().invoke(cli, ["stats", str(chm), "--polygons", str(polygons), "--out", str(tmp_path / "t.xlsx")])
    assert bad.exit_code == 1 and "must end in .gpkg, .csv or .parquet" in bad.output
