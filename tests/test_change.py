"""Height change: a simulated harvest found whole and nothing else, on predictions and on lidar-like maps; grids,
dates, noise thresholds, blocks and bad input."""

from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from forests import synthetic_forest, write_forest

import canopy
from canopy.analysis.change import UnknownDateWarning, noise_threshold
from canopy.cli.main import cli
from canopy.errors import HeightMapError
from rasters import NEON
from varied_model import varied_model_file

HARVEST = shapely.box(500150, 3999800, 500230, 3999870)


def _harvested(data, polygon, seed: int = 5, noise: float = 0.3):
    """A copy with noise added everywhere and every pixel inside ``polygon`` cut to 0-0.5 m."""
    rng = np.random.default_rng(seed)
    cut = data.copy()
    cut.values = cut.values + rng.normal(0, noise, cut.shape).astype(np.float32)
    inside = shapely.contains_xy(polygon, *np.meshgrid(cut.x, cut.y))
    cut.values[inside] = rng.uniform(0, 0.5, inside.sum())
    return cut


def _dated(path, date: str):
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME=date)
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("change")
    before = synthetic_forest(300.0, res=0.5, seed=1)
    return (_dated(write_forest(folder / "before.tif", before), "2021:06:01 10:00:00"),
            _dated(write_forest(folder / "after.tif", _harvested(before, HARVEST)), "2024:06:01 10:00:00"))


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_a_harvest_is_found_whole_and_nothing_else_and_the_forest_lost_is_its_area(maps, tmp_path):
    out = tmp_path / "change.tif"
    result = canopy.change(*maps, out, forest_definition=canopy.ForestDefinition())
    assert len(result.loss) == 1 and len(result.gain) == 0  # 0.3 m of noise is no change
    assert _iou(result.loss.geometry.iloc[0], HARVEST) >= 0.9
    row = result.loss.iloc[0]
    assert row.change_mean < -15 and row.after_mean < 0.5 and row.before_mean > 15
    assert row.area_ha == pytest.approx(result.loss.geometry.iloc[0].area / 1e4)
    assert result.forest_lost_ha == pytest.approx(result.loss.geometry.iloc[0].intersection(
        shapely.union_all(result.forest.polygons.geometry.values)).area / 1e4)
    assert 0.4 < result.forest_lost_ha <= HARVEST.area / 1e4
    assert (result.before_date, result.after_date) == ("2021:06:01 10:00:00", "2024:06:01 10:00:00")
    with rasterio.open(out) as src:
        assert src.tags()["canopy_change_before_date"] == "2021:06:01 10:00:00" and src.descriptions == ("height change (m)",)
        difference = src.read(1)
    with rasterio.open(maps[0]) as b, rasterio.open(maps[1]) as a:
        np.testing.assert_array_equal(difference, a.read(1) - b.read(1))  # NaN where either has no data
    assert 'minimumValue="-' in out.with_suffix(".qml").read_text()
    layers = gpd.read_file(out.with_suffix(".gpkg"), layer="loss")
    assert len(layers) == 1 and {"area_ha", "before_mean", "after_mean", "change_mean"} <= set(layers.columns)
    assert (tmp_path / "change_forest.tif").exists() and (tmp_path / "change_forest.gpkg").exists()


def test_blocks_give_the_whole_maps_change(maps):
    whole = canopy.change(*maps, block_size=100_000)
    parts = canopy.change(*maps, block_size=77, opening=2.0)
    opened_whole = canopy.change(*maps, block_size=100_000, opening=2.0)
    np.testing.assert_array_equal(parts.difference.values, whole.difference.values)
    assert parts.loss.geometry.iloc[0].equals(opened_whole.loss.geometry.iloc[0])
    assert parts.loss.change_mean.iloc[0] == pytest.approx(opened_whole.loss.change_mean.iloc[0], rel=1e-9)


def test_two_predictions_of_the_same_imagery_show_no_change_and_a_cut_is_found(tmp_path):
    model = str(varied_model_file(tmp_path / "varied.safetensors"))
    options = dict(model=model, res=0.2, chip_size=56, overlap=14, device="cpu", offline=True)
    rgb = NEON / "TEAK_045_rgb.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = canopy.predict(rgb, out=tmp_path / "first.tif", precision="fp32", block_size=4096, **options)
        canopy.predict(rgb, out=tmp_path / "second.tif", precision="bf16", block_size=84, **options)
        same = canopy.change(tmp_path / "first.tif", tmp_path / "second.tif", threshold=1.0, min_area_ha=0.005)
    assert len(same.loss) == len(same.gain) == 0 and np.nanmax(np.abs(same.difference.values)) < 1.0
    left, bottom, right, top = first.rio.bounds()
    cut = shapely.box(left + 12, bottom + 14, left + 24, bottom + 26)
    harvested = _harvested(first, cut, noise=0.0)
    harvested.rio.to_raster(tmp_path / "cut.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownDateWarning)
        found = canopy.change(tmp_path / "second.tif", tmp_path / "cut.tif", threshold=1.0, min_area_ha=0.005)
    assert len(found.loss) == 1 and len(found.gain) == 0 and _iou(found.loss.geometry.iloc[0], cut) >= 0.9


def test_another_grid_is_averaged_onto_the_first_or_both_onto_a_coarser_one(maps, tmp_path):
    with rasterio.open(maps[0]) as src:
        profile, heights = src.profile, src.read(1)
    coarse = heights.reshape(300, 2, 300, 2).mean(axis=(1, 3))
    profile.update(width=300, height=300, transform=src.transform * src.transform.scale(2))
    with rasterio.open(tmp_path / "coarse.tif", "w", **profile) as dst:
        dst.write(coarse.astype(np.float32), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownDateWarning)
        both = canopy.change(maps[0], tmp_path / "coarse.tif", res=1.0)  # the 0.5 m map averaged to 1 m
        on_first = canopy.change(maps[0], tmp_path / "coarse.tif")  # the 1 m map interpolated to 0.5 m
    assert both.difference.shape == (300, 300)
    difference = both.difference.values
    assert np.nanmax(np.abs(difference)) < 1e-4 and np.isnan(difference).mean() < 0.02  # NaN only in the corner without data
    assert on_first.difference.shape == (600, 600) and len(on_first.loss) == 0


def test_thresholds_from_an_error_figure_and_bad_input_refused_in_one_sentence(maps, tmp_path):
    assert noise_threshold(2.0) == pytest.approx(1.96 * math.sqrt(2) * 2.0)
    assert canopy.change(*maps, error_rmse=2.0).threshold == pytest.approx(5.544, abs=1e-3)
    for kwargs, message in ((dict(threshold=-1.0), "threshold must be a number of metres of at least 0"),
                            (dict(threshold=float("nan")), "threshold must be"),
                            (dict(error_rmse=float("inf")), "error_rmse must be"),
                            (dict(min_area_ha=-0.1), "min_area_ha must be a number of at least 0")):
        with pytest.raises(HeightMapError, match=message):
            canopy.change(*maps, **kwargs)
    far = synthetic_forest(50.0, res=0.5).rio.write_transform(rasterio.Affine(0.5, 0, 700000.0, 0, -0.5, 4000000.0))
    far = far.assign_coords(x=far.x + 200000.0)
    write_forest(tmp_path / "far.tif", far)
    out = tmp_path / "c.tif"
    result = CliRunner().invoke(cli, ["change", str(maps[0]), str(tmp_path / "far.tif"), "--out", str(out)])
    assert result.exit_code == 1 and "do not overlap" in result.output and "Traceback" not in result.output
    assert not out.exists() and not out.with_suffix(".gpkg").exists()
    result = CliRunner().invoke(cli, ["change", str(maps[0]), str(maps[1]), "--out", str(out), "--threshold", "-2"])
    assert result.exit_code == 1 and "at least 0" in result.output and not out.exists()


def test_cli_reports_dates_polygons_and_forest_lost(maps, tmp_path):
    out = tmp_path / "change.tif"
    result = CliRunner().invoke(cli, ["change", *map(str, maps), "--out", str(out), "--forest"])
    assert result.exit_code == 0, result.output
    assert "(2021:06:01 10:00:00) -> after.tif (2024:06:01 10:00:00)" in result.output
    assert "1 loss polygons" in result.output and "of which lost" in result.output
    plain = tmp_path / "plain.tif"
    write_forest(plain, synthetic_forest(300.0, res=0.5, seed=1))
    with pytest.warns(UnknownDateWarning, match="does not say when its imagery was taken"):
        canopy.change(plain, maps[1])


def test_a_misregistered_second_date_is_coregistered_sub_pixel_before_differencing(tmp_path):
    before = synthetic_forest(300.0, res=0.5, seed=2)
    cut = shapely.box(500150, 3999850, 500200, 3999900)  # a 0.25 ha harvest
    after = before.copy()
    inside = shapely.contains_xy(cut, *np.meshgrid(after.x, after.y))
    after.values = np.where(inside & np.isfinite(after.values), 0.3, after.values).astype(np.float32)
    shifted = after.assign_coords(x=after.x + 1.3, y=after.y - 0.7).rio.write_transform(None)  # 1.5 m off, as orthophotos are
    paths = write_forest(tmp_path / "before.tif", before), write_forest(tmp_path / "after.tif", shifted)
    warnings.simplefilter("ignore", UnknownDateWarning)
    fixed = canopy.change(*paths, tmp_path / "fixed.tif", min_area_ha=0.01)
    raw = canopy.change(*paths, tmp_path / "raw.tif", min_area_ha=0.01, coregister=False)
    assert fixed.shift.dx_m == pytest.approx(1.3, abs=0.15) and fixed.shift.dy_m == pytest.approx(-0.7, abs=0.15)
    assert fixed.shift.significant and raw.shift is None
    assert fixed.counts["gain"][0] == 0 and raw.counts["gain"][0] > 0  # crown edges no longer show as gain beside loss
    assert fixed.counts["loss"][0] == 1 and fixed.counts["loss"][1] < raw.counts["loss"][1]
    truth = canopy.change(paths[0], write_forest(tmp_path / "aligned.tif", after), min_area_ha=0.01,
                          coregister=False).loss.geometry.iloc[0]  # what a registered pair shows
    found = fixed.loss.geometry.iloc[0]
    assert found.intersection(truth).area / found.union(truth).area > 0.9
    with rasterio.open(tmp_path / "fixed.tif") as src:
        assert src.tags()["canopy_change_shift"].startswith("dx=+1.")
    result = CliRunner().invoke(cli, ["change", *map(str, paths), "--out", str(tmp_path / "cli.tif"), "--min-area-ha", "0.01"])
    assert result.exit_code == 0 and "shift of after.tif against before.tif: dx=+1." in result.output


def test_maps_too_small_to_coregister_are_compared_as_they_lie_with_a_warning(tmp_path):
    small = synthetic_forest(30.0, res=0.5, seed=1)
    paths = write_forest(tmp_path / "a.tif", small), write_forest(tmp_path / "b.tif", small)
    with pytest.warns(canopy.analysis.change.CoregistrationWarning, match="could not be estimated"):
        result = canopy.change(*paths, min_area_ha=0.0)
    assert result.shift is None and result.counts["loss"][0] == 0


def test_a_shift_is_applied_only_when_over_a_tenth_of_a_pixel_and_twice_its_standard_error():
    from canopy.analysis.coregistration import Shift

    assert not Shift(0.03, 0.02, 0.001, 10, 16, 0.5).significant  # 0.07 px
    assert not Shift(0.3, 0.0, 0.2, 10, 16, 0.5).significant  # within two standard errors of none
    assert Shift(0.3, 0.0, 0.01, 10, 16, 0.5).significant
    assert Shift(0.3, 0.0, 0.01, 10, 16, 0.5).describe() == "dx=+0.30 m, dy=+0.00 m (± 0.01 m, 10 of 16 windows)"
    assert Shift(0.03, 0.0, 0.01, 10, 16, 0.5).describe().endswith("; not applied)")


def test_evaluate_change_scores_loss_against_lidar_by_threshold_and_area(tmp_path):
    with rasterio.open(NEON / "TEAK_052_chm_1m.tif") as src:
        profile, lidar = src.profile, src.read(1, masked=True).filled(np.nan).astype(np.float32)
    profile.update(nodata=np.nan, dtype="float32")
    cut = lidar.copy()
    cut[5:20, 10:30] = np.where(np.isfinite(cut[5:20, 10:30]), 0.2, np.nan)  # a 300 m² harvest
    rng = np.random.default_rng(0)
    paths = {}
    for name, values in (("lidar_before", lidar), ("lidar_after", cut), ("before", lidar + rng.normal(0, 0.3, lidar.shape)),
                         ("after", cut + rng.normal(0, 0.3, lidar.shape)), ("missed", lidar + rng.normal(0, 0.3, lidar.shape))):
        paths[name] = tmp_path / f"{name}.tif"
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(values.astype(np.float32), 1)
    scores = canopy.evaluate_change(paths["before"], paths["after"], paths["lidar_before"], paths["lidar_after"])
    table = scores.table.set_index(["threshold_m", "min_area_m2"])
    assert len(table) == 24 and scores.mae < 0.6 and abs(scores.bias) < 0.1
    assert table.loc[(5.0, 25.0), "f1"] > 0.95 and table.loc[(5.0, 25.0), "iou"] > 0.9
    reference_area = table.loc[(5.0, 10.0), "reference_m2"]
    assert 100 < reference_area <= 300
    assert np.isnan(table.loc[(5.0, 400.0), "f1"])  # no loss patch of 400 m² in either: nothing to score
    missed = canopy.evaluate_change(paths["before"], paths["missed"], paths["lidar_before"], paths["lidar_after"])
    assert missed.table.set_index(["threshold_m", "min_area_m2"]).loc[(5.0, 25.0), "recall"] == 0
    result = CliRunner().invoke(cli, ["evaluate-change", *(str(paths[k]) for k in ("before", "after", "lidar_before", "lidar_after")),
                                      "--csv", str(tmp_path / "scores.csv"), "--plot", str(tmp_path / "scores.png")])
    assert result.exit_code == 0 and "difference against lidar: MAE" in result.output
    assert (tmp_path / "scores.png").stat().st_size > 10_000 and len((tmp_path / "scores.csv").read_text().splitlines()) == 25
