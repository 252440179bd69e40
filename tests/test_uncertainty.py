"""How far to trust a height: the spread of a binned head's distribution, of the chips a pixel blends and of test-time
flips; the uncertainty a run writes beside its heights; conformal intervals calibrated on held-out plots; intervals
written by predict, given by ``prediction_interval`` and scored by ``evaluate``; references that are points."""

from __future__ import annotations

import dataclasses
import json
import warnings

import geopandas
import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from shapely.geometry import Point

import canopy
from canopy.accuracy.calibration_fit import _folds, _held_out_calibrated, _pairs_on_grid
from canopy.accuracy.evaluation import coverage, paired_layers
from canopy.accuracy.interval_fit import conformal_quantiles, fit_interval
from canopy.accuracy.point_references import PointReference, spatial_folds
from canopy.calibration import Calibration, CalibrationError
from canopy.cli.main import cli
from canopy.errors import EvaluationError, ResumeError
from canopy.grid import Block
from canopy.io.companions import companion
from canopy.models import HeightModel, get_model_spec
from canopy.models.heads.dpt import HeightBins, bin_centres, bins_to_height, bins_to_moments
from canopy.models.vision_transformer import build_vision_transformer
from canopy.runtime.inference import ChipPredictor
from canopy.runtime.stitch import blend
from canopy.tiling.chips import ChipLayout
from rasters import NEON
from varied_model import varied_model_file

PLOTS = ["TEAK_043", "TEAK_044", "TEAK_045", "TEAK_046", "TEAK_047", "TEAK_049", "TEAK_050", "TEAK_051", "TEAK_052",
         "TEAK_053", "TEAK_054", "TEAK_055"]
RGB = NEON / "TEAK_043_rgb.tif"
OPTIONS = dict(res=0.2, block_size=32, chip_size=56, overlap=14, device="cpu", precision="fp32", offline=True)


def _small_binned_model(logits: np.ndarray) -> HeightModel:
    """Meta v1's binned head at reduced width whose last layer predicts the same ``logits`` at every pixel."""
    spec = get_model_spec("meta-chm-v1-huge")
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, embed_dim=64, depth=4, num_heads=4),
                               head=dataclasses.replace(spec.head, layers=(0, 1, 2, 3), out_channels=(8, 16, 32, 64), features=32))
    model = HeightModel(spec, build_vision_transformer(spec.backbone)).eval()
    model.backbone.init_random(0)
    model.init_head_random(0)
    last = model.head.conv_depth.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.from_numpy(logits))
    return model


def test_a_binned_head_gives_the_std_of_its_bin_distribution_and_the_same_heights():
    logits = np.zeros(256, np.float32)
    logits[60:80] = np.linspace(1, 30, 20)  # mass around bins 60-80 (23-31 m) over the +0.1 floor of every bin
    model = _small_binned_model(logits)
    centres = bin_centres(HeightBins()).numpy().astype(np.float64) * 10
    weights = np.maximum(logits, 0) + 0.1
    weights /= weights.sum()
    mean = (weights * centres).sum()
    std = np.sqrt((weights * (centres - mean) ** 2).sum())
    chips = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    moments = ChipPredictor(model, torch.device("cpu"), moments=True)(chips)
    assert moments.shape == (2, 2, 32, 32)
    np.testing.assert_allclose(moments[:, 0], mean, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(moments[:, 1]), std, rtol=1e-4)
    assert 5 < std < 15  # the +0.1 floor spreads mass over all of 0-100 m: a wide distribution
    heights = ChipPredictor(model, torch.device("cpu"))(chips)
    assert np.array_equal(heights, moments[:, 0])  # asking for the spread leaves the heights' bits alone


@pytest.mark.parametrize("strategy", ["linear", "chmv2_mixlog"])
def test_moments_keep_the_heights_bits_and_a_sharp_distribution_has_no_spread(strategy):
    bins = HeightBins(256, 0.001, 10.0, 10.0, strategy)
    logits = torch.randn(2, 256, 3, 5, generator=torch.Generator().manual_seed(1)) * 4
    moments = bins_to_moments(logits, bins)
    assert torch.equal(moments[:, :1], bins_to_height(logits, bins))
    sharp = torch.full((1, 256, 1, 1), -50.0)
    sharp[0, 100] = 1e9  # all the weight on one bin (CHMv2's floor 1e-8 and v1's 0.1 vanish beside it)
    assert bins_to_moments(sharp, bins)[0, 1].item() < 1e-4  # under 1 cm of standard deviation


def test_chips_that_agree_have_no_spread_and_a_hand_case_gives_the_weighted_spread():
    layout = ChipLayout(28, 14, 14)
    block = Block(0, 0, 42, 42)
    weights = layout.window()
    flat = {(r, c): np.stack([np.full((28, 28), 12.0, np.float32), np.zeros((28, 28), np.float32)])
            for r in (0, 14) for c in (0, 14)}
    valid = np.ones((42, 42), bool)
    heights, spread = blend(block, layout, flat, valid, spread=True)
    assert np.allclose(heights, 12.0) and np.abs(spread).max() < 1e-3
    hand = {(0, 0): np.stack([np.full((28, 28), 10.0, np.float32), np.full((28, 28), 1.0, np.float32)]),
            (0, 14): np.stack([np.full((28, 28), 14.0, np.float32), np.full((28, 28), 4.0, np.float32)])}
    heights, spread = blend(block, layout, hand, valid, spread=True)
    w1, w2 = weights[5, 20], weights[5, 6]  # pixel (5, 20): column 20 of the first chip, column 6 of the second
    mean = (w1 * 10 + w2 * 14) / (w1 + w2)
    expected = np.sqrt((w1 * (1 + (10 - mean) ** 2) + w2 * (4 + (14 - mean) ** 2)) / (w1 + w2))
    assert heights[5, 20] == pytest.approx(mean, rel=1e-6) and spread[5, 20] == pytest.approx(expected, rel=1e-5)
    assert spread[5, 3] == pytest.approx(1.0) and spread[5, 35] == pytest.approx(2.0)  # one chip: its own spread
    assert np.isnan(blend(block, layout, hand, np.zeros((42, 42), bool), spread=True).spread).all()
    assert blend(block, layout, {k: v[0] for k, v in hand.items()}, valid).spread is None


def test_test_time_flips_average_four_views_and_their_spread_is_the_mixtures():
    model = HeightModel(get_model_spec("dinov2_vits14"), build_vision_transformer(get_model_spec("dinov2_vits14").backbone)).eval()
    model.backbone.init_random(0)
    model.init_head_random(0)
    chips = np.random.default_rng(2).uniform(0, 1, (2, 3, 28, 28)).astype(np.float32)
    x = torch.from_numpy(chips)
    with torch.inference_mode():
        views = torch.stack([model(x.flip(d)).flip(d)[:, 0] if d else model(x)[:, 0] for d in ((), (-1,), (-2,), (-2, -1))])
    got = ChipPredictor(model, torch.device("cpu"), moments=True, tta=True)(chips)
    np.testing.assert_allclose(got[:, 0], views.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(got[:, 1], views.var(0, unbiased=False).numpy(), rtol=1e-4, atol=1e-10)
    assert got[:, 1].max() > 0  # the model is no flip-invariant: the flips disagree
    np.testing.assert_allclose(ChipPredictor(model, torch.device("cpu"), tta=True)(chips), got[:, 0], rtol=1e-6)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(varied_model_file(tmp_path_factory.mktemp("model") / "varied.safetensors"))


def _predict(out, model, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canopy.predict(RGB, out=out, model=model, **OPTIONS, **extra)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.tags(), src.descriptions[0]


def test_predict_writes_the_uncertainty_beside_the_same_heights_styled_and_tagged(model, tmp_path):
    plain = _predict(tmp_path / "plain.tif", model)
    chm = _predict(tmp_path / "h.tif", model, uncertainty=True)
    assert np.array_equal(chm.values, plain.values, equal_nan=True)
    spread, tags, description = _read(tmp_path / "h.uncertainty.tif")
    assert np.array_equal(chm.uncertainty.values, spread, equal_nan=True)
    assert np.array_equal(np.isnan(spread), np.isnan(chm.values))
    assert tags["canopy_layer"] == "uncertainty" and "overlapping chips" in tags["canopy_uncertainty"]
    assert description == "canopy height uncertainty, one standard deviation (m)"
    assert _read(tmp_path / "h.tif")[1]["canopy_uncertainty"] == tags["canopy_uncertainty"]
    assert 0.01 < np.nanmax(spread) < 5 and (spread[np.isfinite(spread)] == 0).mean() < 0.9  # overlaps disagree
    assert "#3b0f70" in (tmp_path / "h.uncertainty.qml").read_text()  # its own ramp, not the heights' greens
    flipped = _predict(tmp_path / "tta.tif", model, uncertainty=True, tta=True)
    assert np.nanmedian(flipped.uncertainty.values) > np.nanmedian(chm.uncertainty.values)  # flips disagree everywhere
    assert _read(tmp_path / "tta.tif")[1]["canopy_tta"].startswith("mean of 4 flips")
    _predict(tmp_path / "h.tif", model)  # the same output again without: the stale uncertainty goes
    assert not companion(tmp_path / "h.tif", "uncertainty").exists() and not (tmp_path / "h.uncertainty.qml").exists()


def test_a_run_stopped_midway_resumes_to_the_same_uncertainty(model, tmp_path):
    whole = tmp_path / "whole.tif"
    _predict(whole, model, uncertainty=True)

    def stop(progress):
        if progress.blocks_done >= 8:
            raise KeyboardInterrupt

    out = tmp_path / "stopped.tif"
    with pytest.raises(KeyboardInterrupt):
        _predict(out, model, uncertainty=True, progress=stop)
    kept = list((tmp_path / ".stopped.tif.partial").glob("r*_c*.spread.npy"))
    assert 8 <= len(kept) < 25 and not out.exists() and not companion(out, "uncertainty").exists()
    kept[0].write_bytes(kept[0].read_bytes()[:100])  # a spread cut short: its block is computed again
    chm = _predict(out, model, uncertainty=True, resume=True)
    assert canopy.RunSummary.from_attrs(chm.attrs).blocks_reused >= 7
    assert out.read_bytes() == whole.read_bytes()
    assert companion(out, "uncertainty").read_bytes() == companion(whole, "uncertainty").read_bytes()
    again = tmp_path / "again.tif"
    with pytest.raises(KeyboardInterrupt):
        _predict(again, model, uncertainty=True, progress=stop)
    with pytest.raises(ResumeError, match="canopy_uncertainty"):  # a run without it cannot continue one with it
        _predict(again, model, resume=True)


def _distort(h):
    return 0.6 * h + 0.01 * h**2 + 2.0


def _write(path, like_profile, data, tags):
    profile = {k: v for k, v in like_profile.items() if k not in ("blockxsize", "blockysize", "tiled", "interleave")}
    profile.update(nodata=np.nan, dtype="float32", driver="COG")  # a map with canopy's tags is a COG, as the suite checks
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.float32), 1)
        dst.update_tags(**tags)
    return path


TAGS = {"canopy_model": "meta-chm-v2", "canopy_weights": "a" * 64, "canopy_head_weights": "b" * 64,
        "canopy_uncertainty": "standard deviation (m) of a test"}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Maps of the lidar plots distorted with noise that grows with height and is three times larger on a third of the
    pixels at any height (shade, say), and a raw uncertainty that knows it roughly."""
    folder = tmp_path_factory.mktemp("noisy")
    rng = np.random.default_rng(0)
    maps = []
    for plot in PLOTS:
        with rasterio.open(NEON / f"{plot}_chm_1m.tif") as src:
            profile, lidar = src.profile, src.read(1, masked=True).filled(np.nan).astype(np.float64)
        shade = np.where(rng.random(lidar.shape) < 0.3, 3.0, 1.0)  # a third of the pixels three times as unsure
        sd = (0.1 + 0.15 * lidar) * shade
        _write(folder / f"{plot}.tif", profile, _distort(lidar) + rng.normal(0, 1, lidar.shape) * sd, TAGS)
        _write(folder / f"{plot}.uncertainty.tif", profile, sd * np.exp(rng.normal(0, 0.1, lidar.shape)), TAGS)
        maps.append(folder / f"{plot}.tif")
    return maps


def _references(plots):
    return [NEON / f"{p}_chm_1m.tif" for p in plots]


def _held_out_bounds(calibration, maps, plots, scaled=True):
    parts = []
    for path, ref in zip(maps, _references(plots)):
        layers = [path, companion(path, "uncertainty")] if scaled else [path]
        for bands, lidar in paired_layers(layers, ref):
            parts.append((*calibration.interval.bounds(calibration.apply(bands[0]), bands[1] if scaled else None), lidar))
    return [np.concatenate([p[k].ravel() for p in parts]) for k in range(3)]


def test_a_conformal_interval_covers_90_percent_of_held_out_plots_and_is_narrower_than_one_global(noisy, tmp_path):
    fitted = canopy.calibrate(noisy[:6], _references(PLOTS[:6]), tmp_path / "c.json")
    interval = fitted.interval
    assert interval.scaled and interval.uncertainty == TAGS["canopy_uncertainty"] and interval.level == 0.9
    held = coverage(*_held_out_bounds(fitted, noisy[6:], PLOTS[6:]))
    assert 0.88 <= held["picp"] <= 0.92
    assert all(0.85 <= row["picp"] <= 0.95 for row in held["by_height_bin"].values() if row["n"] > 500)  # in every bin
    grids = [_pairs_on_grid(str(m), str(r), False) for m, r in zip(noisy[:6], _references(PLOTS[:6]))]
    heights, lidar, _ = _held_out_calibrated(_folds(grids)[1])  # the errors the fitted interval was fitted on
    one = dataclasses.replace(fitted, interval=fit_interval(heights, lidar, None, max_bins=1))
    global_held = coverage(*_held_out_bounds(one, noisy[6:], PLOTS[6:], scaled=False))
    assert 0.87 <= global_held["picp"] <= 0.93 and held["mpiw"] < global_held["mpiw"]
    v = fitted.validation["interval"]
    assert v["scaled_by"] == "uncertainty" and 0.87 <= v["after"]["picp"] <= 0.93 and v["after"]["mpiw"] < v["before"]["mpiw"]
    assert v["before"]["by_height_bin"]["30+"]["picp"] < 0.8 < v["after"]["by_height_bin"]["30+"]["picp"]
    again = Calibration.read(tmp_path / "c.json")
    assert again.interval == interval and again.digest == fitted.digest
    wide, narrow = again.interval.bounds(np.array([20.0]), np.array([2.0]), 0.95), again.interval.bounds(np.array([20.0]), np.array([2.0]), 0.5)
    assert wide[0] < narrow[0] < 20 < narrow[1] < wide[1]
    with pytest.raises(CalibrationError, match="level 0.999 is outside"):
        again.interval.bounds(np.array([20.0]), np.array([2.0]), 0.999)


def test_without_an_uncertainty_the_interval_still_widens_with_height(noisy, tmp_path):
    for path in noisy[:4]:
        companion(path, "uncertainty").rename(tmp_path / companion(path, "uncertainty").name)
    try:
        fitted = canopy.calibrate(noisy[:4], _references(PLOTS[:4]))
    finally:
        for path in noisy[:4]:
            (tmp_path / companion(path, "uncertainty").name).rename(companion(path, "uncertainty"))
    assert not fitted.interval.scaled
    lower, upper = fitted.interval.bounds(np.array([2.0, 35.0]), None)
    assert upper[1] - lower[1] > 2 * (upper[0] - lower[0])


def test_heights_tied_at_zero_make_one_bin_of_bare_ground_not_an_empty_one():
    rng = np.random.default_rng(0)
    heights = np.concatenate([np.zeros(3000), rng.uniform(0, 30, 7000)])  # calibrated heights floored at 0 m
    fitted = fit_interval(heights, heights + rng.normal(0, 1, heights.size) * (0.2 + heights / 10), None)
    assert min(fitted.counts) >= 500 and sum(fitted.counts) == heights.size and len(fitted.counts) == len(fitted.edges) + 1
    assert fitted.counts[0] >= 3000 and 0.0 < fitted.edges[0] < 5.0  # the ground's ties share the lowest bin
    lower, upper = fitted.bounds(np.array([0.0, 25.0]), None)
    assert upper[0] - lower[0] < 0.5 * (upper[1] - lower[1])


def test_conformal_quantiles_take_the_finite_sample_ranks():
    scores = np.arange(1, 20, dtype=float)  # 19 scores: the 95 % upper rank is ceil(20 * 0.95) = 19, the 5 % lower is 1
    assert conformal_quantiles(scores, [0.05, 0.5, 0.95]) == [1.0, 10.0, 19.0]
    assert conformal_quantiles(scores, [0.2, 0.8]) == [4.0, 16.0]
    assert conformal_quantiles(np.arange(1, 11, dtype=float), [0.1, 0.9]) == [1.0, 10.0]  # ceil(11 * 0.9): the largest


def _varied_map_and_calibration(model, tmp_path):
    """A varied model's map with its uncertainty, and an interval fitted for it on lidar made from the map itself."""
    first = _predict(tmp_path / "first.tif", model, uncertainty=True)
    rng = np.random.default_rng(3)
    with rasterio.open(tmp_path / "first.tif") as src:
        profile = src.profile
    lidar = first.values * 3 + rng.normal(0, 1, first.shape) * (0.05 + 5 * first.uncertainty.values)  # errors where chips disagree
    reference = _write(tmp_path / "lidar.tif", profile, lidar, {})
    canopy.calibrate(tmp_path / "first.tif", [reference], tmp_path / "c.json")
    return reference, tmp_path / "c.json"


def test_predict_with_a_calibration_writes_its_interval_and_prediction_interval_and_evaluate_agree(model, tmp_path):
    reference, calibration = _varied_map_and_calibration(model, tmp_path)
    chm = _predict(tmp_path / "cal.tif", model, calibration=calibration)  # the interval scales: uncertainty comes along
    assert {"uncertainty", "lower", "upper"} <= set(chm.coords)
    lower, tags, description = _read(tmp_path / "cal.lower.tif")
    upper = _read(tmp_path / "cal.upper.tif")[0]
    assert tags["canopy_layer"] == "lower" and tags["canopy_interval_level"] == "0.9" and description.startswith("lower bound of the 90%")
    valid = np.isfinite(chm.values)
    assert np.all(lower[valid] <= chm.values[valid]) and np.all(chm.values[valid] <= upper[valid])
    interval = canopy.prediction_interval(tmp_path / "first.tif", calibration)
    np.testing.assert_array_equal(interval.lower.values, lower)
    np.testing.assert_array_equal(interval.upper.values, upper)
    raw = canopy.open(tmp_path / "first.tif").assign_coords(uncertainty=chm.uncertainty.variable)
    np.testing.assert_array_equal(canopy.prediction_interval(raw, calibration).upper.values, upper)  # a DataArray alike
    np.testing.assert_array_equal(canopy.prediction_interval(chm, calibration).lower.values, lower)  # already calibrated
    assert (canopy.prediction_interval(chm, calibration, level=0.5).upper.values[valid] <= upper[valid]).all()
    by_files = canopy.evaluate(tmp_path / "cal.tif", reference, interval=(tmp_path / "cal.lower.tif", tmp_path / "cal.upper.tif"))
    by_calibration = canopy.evaluate(tmp_path / "first.tif", reference, interval=calibration)
    assert by_files.interval["picp"] == by_calibration.interval["picp"] and by_calibration.interval["level"] == 0.9
    assert canopy.evaluate(tmp_path / "cal.tif", reference, interval=calibration).interval == by_calibration.interval  # not twice
    assert 0.8 < by_files.interval["picp"] <= 1.0 and by_files.interval["mpiw"] > 0
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "first.tif"), str(reference), "--interval", str(calibration)])
    assert result.exit_code == 0 and "prediction interval (90%)" in result.output and "PICP" in result.output
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "cal.tif"), str(reference), "--interval",
                                      f"{tmp_path / 'cal.lower.tif'},{tmp_path / 'cal.upper.tif'}", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0 and json.loads((tmp_path / "m.json").read_text())["interval"]["picp"] == by_files.interval["picp"]


def test_an_interval_that_needs_an_uncertainty_is_refused_without_one(model, tmp_path):
    reference, calibration = _varied_map_and_calibration(model, tmp_path)
    _predict(tmp_path / "plain.tif", model)
    with pytest.raises(CalibrationError, match="has none; predict with --uncertainty"):
        canopy.prediction_interval(tmp_path / "plain.tif", calibration)
    with pytest.raises(CalibrationError, match="has none beside it"):
        canopy.evaluate(tmp_path / "plain.tif", reference, interval=calibration)
    with pytest.raises(CalibrationError, match="same --tta setting"):
        _predict(tmp_path / "tta.tif", model, calibration=calibration, tta=True)
    _predict(tmp_path / "flipped.tif", model, uncertainty=True, tta=True)  # an existing map whose spread holds flips
    with pytest.raises(CalibrationError, match="4 flips of map .*flipped.tif; use maps made with that model and the same --tta"):
        canopy.prediction_interval(tmp_path / "flipped.tif", calibration)
    with pytest.raises(CalibrationError, match="4 flips of map .*flipped.tif"):
        canopy.evaluate(tmp_path / "flipped.tif", reference, interval=calibration)
    result = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "first.tif"), str(reference), "--out", str(tmp_path / "x.json"),
                                      "--level", "0.8"])
    assert result.exit_code == 0, result.output
    assert "80% interval on held-out parts" in result.output and "scaled by uncertainty" in result.output
    assert Calibration.read(tmp_path / "x.json").interval.level == 0.8


def _footprints(tmp_path, plots, rng, per_plot=16):
    """Points on a grid inside each plot, with RH98 as the lidar's 98th percentile within 12.5 m plus 1 m of noise."""
    rows = []
    for plot in plots:
        with rasterio.open(NEON / f"{plot}_chm_1m.tif") as src:
            lidar, transform, crs = src.read(1, masked=True).filled(np.nan), src.transform, src.crs
        for i in range(per_plot):
            x, y = transform * (4 + (i % 4) * 10.5, 4 + (i // 4) * 10.5)
            cols, rows_ = np.meshgrid(np.arange(lidar.shape[1]) + 0.5, np.arange(lidar.shape[0]) + 0.5)
            cx, cy = transform * (cols, rows_)
            inside = ((cx - x) ** 2 + (cy - y) ** 2 <= 12.5**2) & np.isfinite(lidar)
            rows.append({"rh98": np.percentile(lidar[inside], 98) + rng.normal(0, 1.0), "geometry": Point(x, y)})
    path = tmp_path / "gedi.gpkg"
    geopandas.GeoDataFrame(rows, crs=crs).to_crs("EPSG:4326").to_file(path)
    return path


def test_footprints_simulated_from_lidar_recover_a_known_distortion(tmp_path):
    rng = np.random.default_rng(5)
    with rasterio.open(NEON / "TEAK_043_chm_1m.tif") as src:
        crs = src.crs
    maps = []
    for plot in PLOTS:
        with rasterio.open(NEON / f"{plot}_chm_1m.tif") as src:
            maps.append(_write(tmp_path / f"{plot}.tif", src.profile, _distort(src.read(1, masked=True).filled(np.nan)), TAGS))
    points = _footprints(tmp_path, PLOTS, rng)
    reference = PointReference("rh98", 25.0, "p98")
    fitted = canopy.calibrate(maps, [points] * len(maps), points=reference)
    assert fitted.interval is None and "no interval" in fitted.validation["interval_note"]
    assert fitted.validation["folds"] >= 2 and fitted.validation["after"]["mae"] < 0.5 * fitted.validation["before"]["mae"]
    lidar_heights = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(fitted.apply(_distort(lidar_heights)[None])[0][1:], lidar_heights[1:], atol=2.0)
    metrics = canopy.evaluate(maps[0], points, points=reference)
    assert 12 <= metrics.n < 16 and metrics.mae > 1.0  # a corner's footprint is mostly off the plot: left out and any("block R² does not apply" in n for n in metrics.notes)
    result = CliRunner().invoke(cli, ["evaluate", str(maps[1]), str(points), "--height-column", "rh98"])
    assert result.exit_code == 0 and "pixels compared   1" in result.output and "block R² does not apply" in result.output
    result = CliRunner().invoke(cli, ["evaluate", str(maps[1]), str(points), "--height-column", "rh"])
    assert result.exit_code == 1 and "have no column 'rh'" in result.output
    result = CliRunner().invoke(cli, ["evaluate", str(maps[1]), str(points)])
    assert result.exit_code == 1 and "points? pass their height column with --height-column" in result.output
    assert crs.is_projected


def test_spatial_folds_never_split_overlapping_footprints():
    xy = np.array([[0, 0], [20, 0], [40, 0], [1000, 0], [1010, 0], [3000, 0]], float)  # a chain of overlaps, a pair, one
    folds = spatial_folds(xy, 25.0)
    assert folds[0] == folds[1] == folds[2] and folds[3] == folds[4] and len(set(folds)) == 3
    across = spatial_folds(np.array([[245, 0], [255, 0], [1000, 0], [3000, 0]], float), 25.0)  # either side of a 250 m cell edge
    assert across[0] == across[1] and len(set(across)) == 3
    with pytest.raises(EvaluationError, match="all lie in one neighbourhood"):
        spatial_folds(xy[:3], 25.0)
    with pytest.raises(EvaluationError, match="--statistic 'median' must be"):
        PointReference("rh98", 25.0, "median")
