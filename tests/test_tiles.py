"""Tile directories: seamless mosaics in mixed CRS, the cached index, and bad directories."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from canopy.cli.main import cli
from canopy.errors import BBoxError, ImageryError, ImageryReadError, SkippedImageryWarning
from canopy.imagery.tile_index import build_index
from canopy.prediction import predict
from rasters import NEON, cut_tiles, reproject_raster, write_raster
from varied_model import spread_m, varied_model_file

RGB = NEON / "TEAK_043_rgb.tif"


def _bbox() -> tuple[float, float, float, float]:
    with rasterio.open(RGB) as src:
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)


def _predict(imagery, model: str, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return predict(imagery, _bbox(), model=model, weights="random", chip_size=112, **kwargs).values


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    return str(varied_model_file(tmp_path_factory.mktemp("model") / "varied.safetensors"))


@pytest.fixture(scope="module")
def single(varied):
    heights = _predict(RGB, varied)
    assert spread_m(heights) > 1.0  # heights that vary by metres, so a seam or a shifted tile shows
    return heights


def test_tiles_in_one_crs_give_exactly_the_single_image_prediction(tmp_path, varied, single):
    cut_tiles(RGB, tmp_path / "tiles")
    tiled = _predict(tmp_path / "tiles", varied)
    assert tiled.shape == single.shape
    np.testing.assert_array_equal(tiled, single)


def test_a_tile_in_another_crs_leaves_no_hole_or_seam(tmp_path, varied, single):
    tiles = cut_tiles(RGB, tmp_path / "tiles")
    reproject_raster(tiles[3], tmp_path / "tiles" / "tile_1_1_utm10.tif", "EPSG:32610")
    tiles[3].unlink()
    mixed = _predict(tmp_path / "tiles", varied)
    inside = np.isfinite(single)
    assert not np.isnan(mixed[inside]).any(), "hole where a tile was reprojected"
    diff = np.abs(mixed - single)[inside]
    spread = np.nanpercentile(single, 95) - np.nanpercentile(single, 5)
    # Stated tolerance: resampling the reprojected quarter twice moves heights by a few percent of the
    # map's range at most, and the other three quarters' far side is untouched.
    assert np.median(diff) <= 0.05 * spread, (np.median(diff), spread)
    assert diff.max() <= 0.5 * spread, (diff.max(), spread)
    far = np.zeros_like(inside)
    far[: single.shape[0] // 3, : single.shape[1] // 3] = True
    np.testing.assert_allclose(mixed[far & inside], single[far & inside], rtol=0, atol=0.02 * spread)


def test_index_is_cached_and_refreshed(tmp_path):
    tiles = cut_tiles(RGB, tmp_path / "tiles")
    first = build_index(tmp_path / "tiles")
    assert first.attrs["rescanned"] == 4 and len(first) == 4
    assert build_index(tmp_path / "tiles").attrs["rescanned"] == 0
    time.sleep(0.01)
    with rasterio.open(tiles[0], "r+") as dst:
        dst.write(np.zeros((3, dst.height, dst.width), np.uint8))
    os.utime(tiles[0], ns=(time.time_ns(), time.time_ns()))
    changed = build_index(tmp_path / "tiles")
    assert changed.attrs["rescanned"] == 1
    tiles[1].unlink()
    cut_tiles(RGB, tmp_path / "tiles" / "more", per_side=1)
    again = build_index(tmp_path / "tiles")
    assert again.attrs["rescanned"] == 1 and len(again) == 4


def test_index_command_prints_a_summary(tmp_path):
    cut_tiles(RGB, tmp_path / "tiles")
    write_raster(tmp_path / "tiles" / "broken.tif", crs=None)
    result = CliRunner().invoke(cli, ["index", str(tmp_path / "tiles")])
    assert result.exit_code == 0, result.output
    assert "5 files, 4 usable" in result.output and "broken.tif: has no CRS" in result.output
    assert "EPSG:32611 (4)" in result.output and "extent (EPSG:4326): -119.011" in result.output


def test_files_without_crs_are_skipped_with_a_warning(tmp_path, varied, single):
    cut_tiles(RGB, tmp_path / "tiles")
    write_raster(tmp_path / "tiles" / "nocrs.tif", crs=None)
    write_raster(tmp_path / "tiles" / "lidar_chm.tif", count=1, dtype="float32")
    with pytest.warns(SkippedImageryWarning, match=r"skipped 2 of 6 rasters .*lidar_chm.tif has 1 band\(s\), not RGB; nocrs.tif has no CRS"):
        result = predict(tmp_path / "tiles", _bbox(), model=varied, weights="random", chip_size=112)
    np.testing.assert_array_equal(result.values, single)
    listing = CliRunner().invoke(cli, ["index", str(tmp_path / "tiles")])
    assert "6 files, 4 usable" in listing.output and "lidar_chm.tif: has 1 band(s), not RGB" in listing.output


def test_bad_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ImageryReadError, match="holds no GeoTIFF"):
        predict(tmp_path / "empty", _bbox(), model="dinov2_vits14", weights="random")
    (tmp_path / "nocrs").mkdir()
    write_raster(tmp_path / "nocrs" / "a.tif", crs=None)
    with pytest.raises(ImageryError, match="No raster in .* is usable"), pytest.warns(SkippedImageryWarning):
        predict(tmp_path / "nocrs", _bbox(), model="dinov2_vits14", weights="random")
    cut_tiles(RGB, tmp_path / "tiles")
    with pytest.raises(BBoxError, match="No raster in .* intersects the bbox"):
        predict(tmp_path / "tiles", (-100.0, 40.0, -99.9, 40.1), model="dinov2_vits14", weights="random")


def test_glob_patterns_work(tmp_path, varied, single):
    cut_tiles(RGB, tmp_path / "tiles")
    np.testing.assert_array_equal(_predict(str(tmp_path / "tiles" / "tile_*.tif"), varied), single)
