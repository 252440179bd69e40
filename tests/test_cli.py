"""The canopy command line: help, version, models, and how errors are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import pytest
from click.testing import CliRunner

from canopy import __version__
from canopy.cli.main import cli
from canopy.cache import cache_dir


def test_help_and_version():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "models" in result.output
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_the_installed_canopy_command_runs_a_prediction(tmp_path):
    """The console script the package installs (not ``python -m canopy``) finds its entry point and predicts."""
    import rasterio

    from rasters import NEON

    command = Path(sys.executable).with_name("canopy")
    assert command.is_file(), f"{command} is not installed; pip install -e . makes it"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and __version__ in version.stdout
    out = tmp_path / "map.tif"
    run = subprocess.run([str(command), "predict", "--imagery", str(NEON / "TEAK_043_rgb.tif"), "--model", "dinov2_vits14",
                          "--weights", "random", "--res", "1.0", "--chip-size", "28", "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ, "CANOPY_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    with rasterio.open(out) as dst:
        assert dst.tags()["canopy_model"] == "dinov2_vits14" and dst.shape == (41, 41)


def test_models_lists_all_dinov2_backbones_with_cache_state():
    target = cache_dir() / "weights" / "dinov2_vitb14_reg" / "dinov2_vitb14_reg4_pretrain.pth"
    target.parent.mkdir(parents=True)
    torch.save({}, target)
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("dinov2")}
    assert len(lines) == 8
    assert lines["dinov2_vits14"][1:] == ["14", "384", "0.5", "Apache-2.0", "no"]
    assert lines["dinov2_vitb14_reg"][-1] == "yes"
    rows = json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)
    assert {r["name"]: r["cached"] for r in rows}["dinov2_vitb14_reg"] is True
    assert {r["name"]: r["embed_dim"] for r in rows}["dinov2_vitg14"] == 1536


def test_predict_reads_a_yaml_config_and_flags_override_it(tmp_path):
    from rasters import NEON

    import rasterio

    config = tmp_path / "settings.yaml"
    config.write_text("res: 1.0\nblock-size: 16\nchip-size: 28\nmodel: dinov2_vits14\nweights: random\n")
    out = tmp_path / "map.tif"
    args = ["predict", "--config", str(config), "--imagery", str(NEON / "TEAK_043_rgb.tif"), "--out", str(out), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.res == (1.0, 1.0)
    assert "computed 4 blocks" in result.output  # 41 x 41 px in blocks of 21 (16 put on the lattice of stride 28 - 7)
    result = CliRunner().invoke(cli, [*args, "--res", "2.0"])
    with rasterio.open(out) as dst:
        assert dst.res == (2.0, 2.0)


def test_predict_config_with_an_unknown_key_is_refused(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("resolution: 1.0\n")
    result = CliRunner().invoke(cli, ["predict", "--config", str(config), "--imagery", "x.tif", "--out", "y.tif"])
    assert result.exit_code == 2 and "unknown keys ['resolution']" in result.output


def test_help_and_version_import_no_torch_or_gdal():
    code = ("import sys\nfrom canopy.cli.main import cli\nfor args in (['--help'], ['--version'], ['predict', '--help']):\n"
            "    try:\n        cli.main(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'rasterio', 'geopandas', 'xarray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_progress_moves_within_a_block_appears_only_once_running_and_the_last_lines_list_the_files(tmp_path):
    import warnings

    from rasters import NEON

    import canopy

    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(NEON / "TEAK_043_rgb.tif", model="dinov2_vits14", weights="random", res=0.25, chip_size=56,
                       batch_size=2, progress=seen.append)  # one block of 160 x 160 px, 16 chips, 8 model calls
    assert seen[0].km2_done == 0 and seen[-1].km2_done == pytest.approx(seen[-1].km2_total)
    within = [p for p in seen if p.blocks_done == 0 and 0 < p.km2_done < p.km2_total]
    assert len(within) >= 3 and [p.chips_done for p in within] == sorted(p.chips_done for p in within)
    out = tmp_path / "map.tif"
    args = ["predict", "--imagery", str(NEON / "TEAK_043_rgb.tif"), "--model", "dinov2_vits14", "--weights", "random",
            "--res", "1", "--chip-size", "28", "--out", str(out), "--quicklook"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "km²" in result.output and "blocks" in result.output
    assert result.output.rstrip().splitlines()[-2:] == [f"wrote {out.with_suffix('.qml')} (QGIS style)",
                                                         f"wrote {out.with_suffix('.png')} (quicklook)"]
    failed = CliRunner().invoke(cli, ["predict", "--imagery", str(tmp_path / "missing.tif"), "--out", str(out),
                                      "--model", "dinov2_vits14", "--weights", "random"])
    assert failed.exit_code == 1 and "predicting" not in failed.output
