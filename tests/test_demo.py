"""The demo end to end, with its smallest settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from canopy.cli.main import cli
from canopy.demo import DATA, TEST_PLOTS


def test_demo_runs_and_says_it_uses_a_random_backbone(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("NO PRETRAINED WEIGHTS")
    report = json.loads((out / "report.json").read_text())
    assert report["pretrained_backbone"] is False and report["backbone_weights"] == "random(seed=0)"
    assert (out / "report.md").read_text().split("\n")[2].startswith("**NO PRETRAINED WEIGHTS")
    for key in ("mae", "rmse", "bias", "r2", "r2_block", "n", "by_height_bin"):
        assert key in report["test_metrics"]
    assert set(report["per_plot"]) == set(TEST_PLOTS)
    # the pooled test metrics are the plots' own, weighted by their pixels
    plots, pooled = [report["per_plot"][p] for p in TEST_PLOTS], report["test_metrics"]
    assert pooled["n"] == sum(p["n"] for p in plots) > 1000
    assert pooled["mae"] == pytest.approx(sum(p["n"] * p["mae"] for p in plots) / pooled["n"], rel=1e-5)
    assert pooled["bias"] == pytest.approx(sum(p["n"] * p["bias"] for p in plots) / pooled["n"], rel=1e-5, abs=1e-6)
    # the baseline, by hand from the lidar: the training mean everywhere
    lidar = []
    for plot in TEST_PLOTS:
        with rasterio.open(DATA / f"{plot}_chm_1m.tif") as src:
            values = src.read(1, masked=True).astype(np.float64)
        lidar.append(values.compressed()[np.isfinite(values.compressed())])
    lidar = np.concatenate(lidar)
    baseline = report["baseline_training_mean"]
    assert baseline["n"] == lidar.size
    assert baseline["mae"] == pytest.approx(np.abs(baseline["value_m"] - lidar).mean(), rel=1e-5)
    assert baseline["bias"] == pytest.approx(baseline["value_m"] - lidar.mean(), rel=1e-5, abs=1e-6)
    for plot in TEST_PLOTS:
        for suffix in (".tif", ".qml", ".png"):
            assert (out / "maps" / f"{plot}_height{suffix}").is_file()
        assert cog_validate(out / "maps" / f"{plot}_height.tif", strict=True) == (True, [], [])
    assert (out / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    calibration = report["calibration"]
    assert calibration["cross_validation"]["scheme"] == "leave-one-plot-out" and calibration["cross_validation"]["folds"] == 5
    assert calibration["test_metrics_calibrated"]["n"] == report["test_metrics"]["n"]
    with rasterio.open(out / "maps" / f"{TEST_PLOTS[0]}_height.tif") as src:
        assert json.loads((out / "calibration.json").read_text())["model"] == src.tags()["canopy_model"]
    assert "calibrated on TEAK_043" in result.output and "calibrated on" in (out / "report.md").read_text()
