"""canopy evaluate against hand-computed metrics, across grids and CRSs, and on a NEON pair."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from canopy.cli.main import cli
from canopy.errors import EvaluationError
from canopy.accuracy.evaluation import evaluate, evaluate_pairs
from rasters import NEON, write_raster

REF = np.array(
    [[0.0, 2.0, 4.0, 6.0], [8.0, 12.0, 16.0, 22.0], [25.0, 28.0, 31.0, 35.0], [-9999.0, 3.0, 9.0, 40.0]], np.float32
)
PRED = np.array(
    [[1.0, 1.0, 5.0, 6.0], [10.0, 9.0, 18.0, 20.0], [20.0, 30.0, 30.0, 33.0], [7.0, np.nan, 12.0, 38.0]], np.float32
)
ORIGIN = Affine(1.0, 0, 500000.0, 0, -1.0, 4000000.0)


def _pair(tmp_path, pred=PRED, pred_transform=ORIGIN, pred_crs="EPSG:32611"):
    ref = write_raster(tmp_path / "ref.tif", data=REF[None], width=4, height=4, count=1, dtype="float32",
                       transform=ORIGIN, nodata=-9999.0)
    h, w = pred.shape
    prediction = write_raster(tmp_path / "pred.tif", data=pred[None], width=w, height=h, count=1, dtype="float32",
                              transform=pred_transform, crs=pred_crs, nodata=float("nan"))
    return prediction, ref


def _by_hand(pred: np.ndarray, ref: np.ndarray) -> dict:
    ok = np.isfinite(pred) & (ref != -9999)
    p, r = pred[ok].astype(float), ref[ok].astype(float)
    d = p - r
    return {"n": d.size, "mae": np.abs(d).mean(), "rmse": math.sqrt((d**2).mean()), "bias": d.mean(),
            "r2": 1 - (d**2).sum() / ((r - r.mean()) ** 2).sum()}


def test_metrics_match_a_hand_computation(tmp_path):
    prediction, ref = _pair(tmp_path)
    got = evaluate(prediction, ref, block_size=2)
    expected = _by_hand(PRED, REF)
    assert got.n == expected["n"] == 14
    for key in ("mae", "rmse", "bias", "r2"):
        assert getattr(got, key) == pytest.approx(expected[key], rel=1e-6), key
    # blocks of 2 x 2: each has >= half its pixels valid, so four block means
    blocks_p = [PRED[:2, :2], PRED[:2, 2:], PRED[2:, :2], PRED[2:, 2:]]
    blocks_r = [REF[:2, :2], REF[:2, 2:], REF[2:, :2], REF[2:, 2:]]
    bp, br = [], []
    for p, r in zip(blocks_p, blocks_r):
        ok = np.isfinite(p) & (r != -9999)
        bp.append(p[ok].mean())
        br.append(r[ok].mean())
    bp, br = np.array(bp), np.array(br)
    assert got.n_blocks == 4
    assert got.r2_block == pytest.approx(1 - ((bp - br) ** 2).sum() / ((br - br.mean()) ** 2).sum(), rel=1e-6)
    bins = got.by_height_bin
    assert bins["0-5"].n == 3 and bins["30+"].n == 3  # reference 3 m has no prediction
    assert bins["0-5"].mae == pytest.approx(np.mean([1, 1, 1]))
    assert bins["30+"].bias == pytest.approx(np.mean([30 - 31, 33 - 35, 38 - 40]))


def test_a_finer_prediction_is_averaged_onto_the_reference_grid(tmp_path):
    fine = np.repeat(np.repeat(PRED, 2, axis=0), 2, axis=1)
    fine[0, 0] = PRED[0, 0] + 2  # the 2 x 2 mean of this cell is PRED[0, 0] + 0.5
    fine[0, 1] = PRED[0, 0] - 1
    fine[~np.isfinite(fine)] = np.nan
    prediction, ref = _pair(tmp_path, pred=fine, pred_transform=Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0))
    got = evaluate(prediction, ref)
    expected_pred = PRED.copy()
    expected_pred[0, 0] += 0.25
    assert got.mae == pytest.approx(_by_hand(expected_pred, REF)["mae"], rel=1e-5)


def test_a_prediction_in_another_crs_is_reprojected(tmp_path):
    """A prediction in EPSG:4326 whose heights rise 1 m per metre east and 0.5 m per metre south, evaluated on the
    reference's 1 m UTM cells: each cell must see the mean of its own ground, so a warp shifted by half a cell fails."""
    from pyproj import Transformer

    west, south, east, north = transform_bounds("EPSG:32611", "EPSG:4326", 499990, 3999990, 500014, 4000010)
    size = 240
    transform = Affine((east - west) / size, 0, west, 0, -(north - south) / size, north)
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    lon, lat = transform * (cols, rows)
    easting, northing = Transformer.from_crs("EPSG:4326", "EPSG:32611", always_xy=True).transform(lon, lat)
    sloped = (10 + (easting - 500000) + 0.5 * (4000000 - northing)).astype(np.float32)
    prediction, ref = _pair(tmp_path, pred=sloped, pred_transform=transform, pred_crs="EPSG:4326")
    got = evaluate(prediction, ref)
    row, col = np.mgrid[0:4, 0:4]
    expected = (10 + (col + 0.5) + 0.5 * (row + 0.5)).astype(np.float32)  # the slope's mean over each reference cell
    by_hand = _by_hand(expected, REF)
    assert got.n == 15
    assert got.bias == pytest.approx(by_hand["bias"], abs=0.02)
    assert got.mae == pytest.approx(by_hand["mae"], abs=0.02)
    assert got.rmse == pytest.approx(by_hand["rmse"], abs=0.02)


def test_baseline_constant_and_pooling(tmp_path):
    prediction, ref = _pair(tmp_path)
    single = evaluate(prediction, ref)
    pooled = evaluate_pairs([(prediction, ref), (prediction, ref)])
    assert pooled.n == 2 * single.n and pooled.mae == pytest.approx(single.mae)
    baseline = evaluate_pairs([(None, ref)], constant=5.0)
    ok = REF != -9999
    assert baseline.mae == pytest.approx(np.abs(5.0 - REF[ok]).mean())


def test_no_overlap_and_no_shared_valid_pixel_are_errors(tmp_path):
    prediction, ref = _pair(tmp_path, pred_transform=Affine(1.0, 0, 600000.0, 0, -1.0, 4000000.0))
    with pytest.raises(EvaluationError, match="do not overlap"):
        evaluate(prediction, ref)
    empty = tmp_path / "empty"
    empty.mkdir()
    prediction, ref = _pair(empty, pred=np.full((4, 4), np.nan, np.float32))
    with pytest.raises(EvaluationError, match="no pixel is valid in both"):
        evaluate(prediction, ref)


def test_neon_reference_against_itself_is_perfect():
    chm = NEON / "TEAK_043_chm_1m.tif"
    got = evaluate(chm, chm, block_size=10)
    assert got.mae == 0 and got.r2 == 1 and got.r2_block == 1 and got.n_blocks == 16
    with rasterio.open(chm) as src:
        data = src.read(1)
    assert got.n == int((data != -9999).sum())


def test_cli_prints_a_table_and_writes_json_and_a_plot(tmp_path):
    prediction, ref = _pair(tmp_path)
    out_json, out_png = tmp_path / "m.json", tmp_path / "m.png"
    result = CliRunner().invoke(cli, ["evaluate", str(prediction), str(ref), "--json", str(out_json), "--plot", str(out_png), "--block-size", "2"])
    assert result.exit_code == 0, result.output
    assert "MAE" in result.output and "R² (blocks)" in result.output and "30+ m" in result.output
    metrics = json.loads(out_json.read_text())
    assert {"mae", "rmse", "bias", "r2", "r2_block", "n", "by_height_bin"} <= set(metrics)
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(cli, ["evaluate", str(prediction), str(tmp_path / "nope.tif")])
    assert bad.exit_code == 1 and "is not a raster GDAL can read" in bad.output


def test_notes_say_when_blocks_are_too_big_and_when_inputs_look_swapped(tmp_path):
    prediction, ref = _pair(tmp_path)
    got = evaluate(prediction, ref, block_size=50)
    assert got.n_blocks == 0 and got.r2_block is None
    assert any("lower --block-size" in note for note in got.notes)
    assert evaluate(prediction, ref, block_size=2).notes == ()
    flat = write_raster(tmp_path / "flat.tif", data=np.full((1, 4, 4), 3.0, np.float32) + np.eye(4, dtype=np.float32)[None] * 0.1,
                        width=4, height=4, count=1, dtype="float32", transform=ORIGIN, nodata=float("nan"))
    swapped = CliRunner().invoke(cli, ["evaluate", str(ref), str(flat), "--block-size", "2"])
    assert swapped.exit_code == 0, swapped.output
    assert "note: R² far below 0" in swapped.output and "PREDICTION comes first" in swapped.output
