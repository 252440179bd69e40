"""Calibration: a known monotone distortion of lidar undone on held-out plots, the file, its refusals, applying it."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

import canopy
from canopy.accuracy.calibration_fit import MIN_PAIRS, fit_monotone
from canopy.calibration import Calibration, CalibrationError
from canopy.cli.main import cli
from canopy.accuracy.evaluation import evaluate_pairs

NEON = canopy.__path__[0] + "/data/neon"
PLOTS = ["TEAK_043", "TEAK_044", "TEAK_045", "TEAK_046", "TEAK_047", "TEAK_049", "TEAK_050", "TEAK_051", "TEAK_052",
         "TEAK_053", "TEAK_054", "TEAK_055"]


def _distort(h):
    """A monotone distortion like a model's: tall canopy underestimated, short canopy overestimated."""
    return 0.6 * h + 0.01 * h**2 + 2.0


def _distorted(tmp_path, plot: str, tags: dict | None = None):
    with rasterio.open(f"{NEON}/{plot}_chm_1m.tif") as src:
        profile, heights = src.profile, src.read(1, masked=True).filled(np.nan).astype(np.float32)
    profile.update(nodata=np.nan, driver="COG")  # a map with canopy's tags is a COG, as the suite checks
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    path = tmp_path / f"{plot}_map.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(_distort(heights), 1)
        dst.update_tags(**(tags or {}))
    return path


def _rewritten(like, path, heights, tags):
    """A COG on the grid of map ``like`` with other heights and tags."""
    with rasterio.open(like) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
    with rasterio.open(path, "w", **{**profile, "driver": "COG"}) as dst:
        dst.write(heights, 1)
        dst.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    tags = {"canopy_model": "meta-chm-v2", "canopy_weights": "a" * 64, "canopy_head_weights": "b" * 64}
    return [_distorted(folder, p, tags) for p in PLOTS]


def _references(plots):
    return [f"{NEON}/{p}_chm_1m.tif" for p in plots]


def test_a_known_distortion_is_undone_on_held_out_plots(maps, tmp_path):
    fitted = canopy.calibrate(maps[:7], _references(PLOTS[:7]), tmp_path / "calib.json", plot=tmp_path / "calib.png")
    held = list(zip(maps[7:], _references(PLOTS[7:])))
    before, after = evaluate_pairs(held), evaluate_pairs(held, transform=fitted.apply)
    assert before.mae > 1.5 and after.mae < 0.05 and abs(after.bias) < 0.05
    v = fitted.validation
    assert v["scheme"] == "leave-one-plot-out" and v["folds"] == 7
    assert v["after"]["mae"] < 0.2 * v["before"]["mae"] and v["after"]["r2"] > v["before"]["r2"]
    assert (tmp_path / "calib.png").stat().st_size > 10_000


def test_the_file_is_small_readable_and_says_what_it_was_fitted_on(maps, tmp_path):
    path = tmp_path / "calib.json"
    fitted = canopy.calibrate(maps[:3], _references(PLOTS[:3]), path)
    data = json.loads(path.read_text())
    assert data["format"] == "canopy-calibration/2" and data["model"] == "meta-chm-v2" and data["weights"] == "a" * 64
    assert data["pairs"] == fitted.pairs > MIN_PAIRS and data["fitted"].startswith("20") and path.stat().st_size < 20_000
    x, y = np.array(data["breakpoints"]).T
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0) and data["range_m"][0] <= x[0]
    again = Calibration.read(path)
    np.testing.assert_allclose(again.apply(np.array([3.0, 10.0, 30.0])), fitted.apply(np.array([3.0, 10.0, 30.0])), atol=1e-3)
    assert again.digest == fitted.digest  # the file keeps what maps' tags record
    by_hand = json.dumps([["meta-chm-v2", "a" * 64, data["head_weights"]], data["breakpoints"], data["interval"]],
                         separators=(",", ":"))
    assert fitted.digest == hashlib.sha256(by_hand.encode()).hexdigest()
    moved = dataclasses.replace(fitted, breakpoints=((x[0], y[0] + 0.01), *fitted.breakpoints[1:]))
    assert moved.digest != fitted.digest and dataclasses.replace(fitted, weights="b" * 64).digest != fitted.digest


def test_isotonic_fit_is_monotone_on_noisy_pairs_and_extrapolates_by_offset():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 40, 20_000)
    y = np.sqrt(x) * 5 + rng.normal(0, 3, x.size)
    points = np.array(fit_monotone(x, y))
    assert np.all(np.diff(points[:, 0]) > 0) and np.all(np.diff(points[:, 1]) >= 0) and len(points) <= 200
    fitted = Calibration("m", "w", "h", tuple(map(tuple, points)), x.size, (0.0, 40.0), "now")
    middle = fitted.apply(np.array([10.0, 20.0]))
    np.testing.assert_allclose(middle, np.sqrt([10.0, 20.0]) * 5, atol=0.6)
    last_x, last_y = points[-1]
    assert fitted.apply(np.array([last_x + 10.0]))[0] == pytest.approx(last_y + 10.0, abs=1e-4)
    assert np.isnan(fitted.apply(np.array([np.nan]))[0]) and fitted.apply(np.array([-50.0]))[0] == 0.0


def test_too_few_pairs_a_flat_reference_mixed_models_and_a_foreign_map_are_refused(maps, tmp_path):
    with rasterio.open(_references(["TEAK_043"])[0]) as src:
        profile, heights = src.profile, src.read(1)
    small = tmp_path / "small.tif"
    with rasterio.open(small, "w", **{**profile, "width": 10, "height": 10}) as dst:
        dst.write(heights[:10, :10], 1)
    with pytest.raises(CalibrationError, match="calibrating needs at least 1000"):
        canopy.calibrate(maps[0], [small])
    flat = tmp_path / "flat.tif"
    with rasterio.open(flat, "w", **profile) as dst:
        dst.write(np.full((40, 40), 12.0, np.float32), 1)
    with pytest.raises(CalibrationError, match="span only 12.0-12.0 m"):
        canopy.calibrate([maps[0], maps[0]], [flat, flat])
    other = _distorted(tmp_path, "TEAK_044", {"canopy_model": "dinov2_vitl14"})
    with pytest.raises(CalibrationError, match="different models or weights"):
        canopy.calibrate([maps[0], other], _references(["TEAK_043", "TEAK_044"]))
    fitted = canopy.calibrate(maps[:3], _references(PLOTS[:3]))
    with pytest.raises(CalibrationError, match="fitted for model meta-chm-v2 .* not for map"):
        canopy.apply_calibration(other, fitted)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "something else"}')
    with pytest.raises(CalibrationError, match="cannot be read"):
        Calibration.read(broken)


def test_applied_to_a_map_it_gives_lidar_heights_and_records_itself(maps, tmp_path):
    fitted = canopy.calibrate(maps[:7], _references(PLOTS[:7]))
    out = tmp_path / "calibrated.tif"
    result = canopy.apply_calibration(maps[9], fitted, out)
    with rasterio.open(_references([PLOTS[9]])[0]) as src:
        lidar = src.read(1, masked=True).filled(np.nan)
    assert np.nanmean(np.abs(result.values - lidar)) < 0.05
    with rasterio.open(out) as src, rasterio.open(maps[9]) as source:
        assert src.tags()["canopy_calibration"] == fitted.digest and src.tags()["canopy_model"] == "meta-chm-v2"
        assert set(src.tags()) - set(source.tags()) == {"canopy_calibration"}  # the map's tags, no reader's attributes
    in_memory = canopy.apply_calibration(maps[9], fitted)
    assert in_memory.attrs["canopy_calibration"] == fitted.digest
    np.testing.assert_array_equal(in_memory.values, result.values)


def test_writing_a_calibrated_map_cleans_up_after_a_killed_run_and_keeps_a_live_one_out(maps, tmp_path):
    import fcntl

    from canopy.errors import OutputPathError

    fitted = canopy.calibrate(maps[:2], _references(PLOTS[:2]))
    out = tmp_path / "calibrated.tif"
    stale = tmp_path / ".calibrated.tif.k1ll3d.tmp.tif"  # what a killed run leaves
    stale.write_bytes(b"half")
    canopy.apply_calibration(maps[3], fitted, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.qml", "calibrated.tif"]
    with open(tmp_path / ".calibrated.tif.lock", "a") as held:  # a live run of the same output
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OutputPathError, match="Another canopy run is writing .*calibrated.tif now"):
            canopy.apply_calibration(maps[3], fitted, out)


def test_cli_prints_the_held_out_proof(maps, tmp_path):
    result = CliRunner().invoke(cli, ["calibrate", str(maps[0]), _references(["TEAK_043"])[0], "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "held out (spatial quarters, 4 folds)" in result.output and "MAE" in result.output
    bad = CliRunner().invoke(cli, ["calibrate", str(maps[0]), str(tmp_path / "c.json"), "--out", str(tmp_path / "d.json")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output and not (tmp_path / "d.json").exists()


def test_predict_applies_a_calibration_for_its_model_and_refuses_one_for_another(tmp_path):
    import warnings

    from rasters import NEON as RGB_DIR
    from varied_model import varied_model_file

    from canopy.calibration import map_identity

    model = str(varied_model_file(tmp_path / "varied.safetensors"))
    options = dict(model=model, res=0.2, chip_size=56, overlap=14, device="cpu", precision="fp32", offline=True, block_size=84)
    rgb = RGB_DIR / "TEAK_043_rgb.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = canopy.predict(rgb, out=tmp_path / "raw.tif", **options)
    fitted = canopy.calibrate(tmp_path / "raw.tif", _references(["TEAK_043"]), tmp_path / "calib.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrated = canopy.predict(rgb, out=tmp_path / "calibrated.tif", calibration=tmp_path / "calib.json", **options)
    np.testing.assert_array_equal(calibrated.values, fitted.apply(raw.values))  # applied to each block as it is blended
    assert calibrated.attrs["canopy_calibration"] == fitted.digest
    with rasterio.open(_references(["TEAK_043"])[0]) as src:
        lidar_mean = float(np.nanmean(src.read(1, masked=True).filled(np.nan)))
    # a random model's heights (mean 4.4 m) mapped onto the lidar's (mean 8.2 m)
    assert abs(np.nanmean(calibrated.values) - lidar_mean) < 1.0 < abs(np.nanmean(raw.values) - lidar_mean)
    other = Calibration("dinov2_vitl14", *map_identity(raw.attrs)[1:], fitted.breakpoints, fitted.pairs, fitted.range_m, fitted.fitted)
    other.write(tmp_path / "other.json")
    result = CliRunner().invoke(cli, ["predict", "--imagery", str(rgb), "--out", str(tmp_path / "refused.tif"), "--model", model, "--res", "0.2",
                                      "--chip-size", "56", "--offline", "--calibration", str(tmp_path / "other.json"), "-q"])
    assert result.exit_code == 1 and "fitted for model dinov2_vitl14" in result.output and not (tmp_path / "refused.tif").exists()


def test_the_mapping_interpolates_inside_and_shifts_outside_its_breakpoints():
    fitted = Calibration("m", "w", "h", ((0.0, 1.0), (10.0, 12.0), (20.0, 25.0)), 100, (0.0, 20.0), "now")
    got = fitted.apply(np.array([-5.0, 5.0, 15.0, 19.0, 25.0, np.nan]))
    np.testing.assert_allclose(got, [0.0, 6.5, 18.5, 23.7, 30.0, np.nan], rtol=1e-6)  # -5 + 1 = -4 is no height: 0
    assert got.dtype == np.float32


def test_a_file_whose_breakpoints_go_down_is_refused_and_a_flat_stretch_is_kept(tmp_path):
    fitted = Calibration("m", "w", "h", ((0.0, 1.0), (10.0, 12.0), (20.0, 25.0)), 100, (0.0, 20.0), "now")
    for points, readable in [([[0, 1], [10, 12], [20, 12]], True), ([[5, 7]], True), ([[0, 1], [10, 12], [5, 25]], False),
                             ([[0, 1], [10, 12], [20, 11]], False), ([], False)]:
        path = tmp_path / "c.json"
        fitted.write(path)
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "breakpoints": points}))
        if readable:
            assert Calibration.read(path).breakpoints == tuple(tuple(map(float, p)) for p in points)
        else:
            with pytest.raises(CalibrationError, match="cannot be read"):
                Calibration.read(path)


def test_quantile_bins_hold_equal_shares_of_the_pairs():
    x = np.arange(1000.0)
    points = np.array(fit_monotone(x, 2 * x, bins=10))
    assert len(points) == 10  # ten bins of a hundred pairs each, none merged, none empty
    np.testing.assert_allclose(np.diff(points[:, 0]), 100.0, atol=0.2)
    np.testing.assert_allclose(points[:, 1], 2 * points[:, 0])


def test_pairs_are_taken_where_both_heights_exist_and_a_single_plot_is_cut_in_four(maps, tmp_path):
    from canopy.accuracy.calibration_fit import _folds

    with rasterio.open(maps[0]) as src:
        heights, tags = src.read(1), src.tags()
    heights[:, :10] = np.nan  # the map misses a strip the lidar has
    holed = _rewritten(maps[0], tmp_path / "holed.tif", heights, tags)
    with rasterio.open(_references(PLOTS[:1])[0]) as src:
        lidar = src.read(1, masked=True).filled(np.nan)
    fitted = canopy.calibrate(holed, _references(PLOTS[:1]))
    assert fitted.pairs == int((np.isfinite(heights) & np.isfinite(lidar)).sum())
    assert np.isfinite(np.array(fitted.breakpoints)).all()
    scheme, folds = _folds([(heights, lidar, None)])
    covered = sum(np.isfinite(fold[0][1]).astype(int) for fold in folds)
    assert scheme == "spatial quarters" and len(folds) == 4 and np.array_equal(covered, np.isfinite(lidar).astype(int))


def test_one_map_per_reference_or_one_for_all(maps):
    with pytest.raises(CalibrationError, match="Give one map, or one map per reference: 2 maps for 1 references"):
        canopy.calibrate(maps=maps[:2], references=_references(PLOTS[:1]), out=None, plot=None)
    with pytest.raises(CalibrationError, match="Give one map, or one map per reference: 0 maps for 0 references"):
        canopy.calibrate([], [])


def test_a_map_of_another_model_is_refused_by_its_path(maps, tmp_path):
    fitted = canopy.calibrate(maps[:2], _references(PLOTS[:2]))
    with rasterio.open(maps[2]) as src:
        heights = src.read(1)
    other = _rewritten(maps[2], tmp_path / "other.tif", heights,
                       {"canopy_model": "meta-chm-v1-huge", "canopy_weights": "c" * 64, "canopy_head_weights": "c" * 64})
    with pytest.raises(CalibrationError, match=f"not for map {other} \\(meta-chm-v1-huge with weights cccc"):
        canopy.apply_calibration(other, fitted)
