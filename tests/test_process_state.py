"""The library leaves the process as it found it: no environment variable, GDAL option or thread count changed by a run,
while the GDAL settings a run needs (remote retries, a bounded block cache) hold for its duration."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.env import get_gdal_config

from canopy import predict
from canopy.imagery import GeoTiffSource
from canopy.io.gdal_env import REMOTE_SETTINGS, run_env

RGB = Path(__file__).resolve().parents[1] / "canopy" / "data" / "neon" / "TEAK_043_rgb.tif"
KEYS = [*REMOTE_SETTINGS, "GDAL_CACHEMAX"]


def _state() -> tuple:
    """What a library call must not change: the environment, GDAL's options, PyTorch's threads."""
    return dict(os.environ), {k: get_gdal_config(k) for k in KEYS}, torch.get_num_threads()


def _served(site: Path, local_server, flaky: int = 0):
    """The plot's orthophoto as a remote COG on 127.0.0.1, its first ``flaky`` requests answered 503."""
    site.mkdir()
    shutil.copy(RGB, site / "plot.tif")
    server = local_server(site, flaky={"/plot.tif": flaky})
    return server, f"{server.url}/plot.tif"


def test_a_remote_prediction_leaves_the_process_as_it_found_it(tmp_path, local_server):
    before = _state()
    assert all(k not in before[0] for k in REMOTE_SETTINGS), "the test needs the remote settings unset by the user"
    _, url = _served(tmp_path / "site", local_server)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = predict(url, (321040.0, 4096740.0, 321050.0, 4096750.0), bbox_crs="EPSG:32611", model="dinov2_vits14",
                         weights="random", chip_size=56, out=tmp_path / "h.tif")
    assert np.isfinite(result.values).any()
    assert _state() == before


def test_opening_a_remote_raster_sets_nothing_for_the_process(tmp_path, local_server):
    before = _state()
    _, url = _served(tmp_path / "site", local_server)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with GeoTiffSource(url) as source:
            assert source.remote
    assert _state() == before


def test_a_run_has_its_gdal_settings_while_it_lasts_and_only_then():
    with run_env():
        assert get_gdal_config("GDAL_HTTP_MAX_RETRY") == 3
        assert get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
    assert get_gdal_config("GDAL_HTTP_MAX_RETRY") is None and "GDAL_HTTP_MAX_RETRY" not in os.environ


def test_a_transient_server_error_is_retried_inside_a_run_and_not_outside(tmp_path, local_server):
    server, url = _served(tmp_path / "site", local_server, flaky=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = predict(url, (321040.0, 4096740.0, 321050.0, 4096750.0), bbox_crs="EPSG:32611", model="dinov2_vits14",
                         weights="random", chip_size=56)
    assert np.isfinite(result.values).any() and server.flaky["/plot.tif"] == 0
    _, url = _served(tmp_path / "again", local_server, flaky=1)
    with pytest.raises(rasterio.errors.RasterioIOError):  # without the run's settings GDAL does not retry
        rasterio.open(url).close()
