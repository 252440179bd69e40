"""The COG written as blocks finish: GDAL reads back every pixel, its overviews are GDAL's own average
overviews, the file is a valid COG (classic and BigTIFF), and the bytes do not depend on the order blocks finish in."""

from __future__ import annotations

import random

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

import canopy.io.cog as cog
from canopy.grid import OutputGrid, iter_blocks
from canopy.io.cog import HEIGHTS, Band, StreamingCog, overview_count
from canopy.io.tile_codec import encode_tile

TAGS = {"canopy_model": "test", "units": "m"}


def _heights(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Heights that vary, with a nodata hole and a nodata edge strip."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    data = (15 + 10 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 1.5, (height, width))).astype(np.float32)
    data[height // 3 : height // 3 + 50, width // 4 : width // 4 + 70] = np.nan
    data[:, -7:] = np.nan
    return data


def _write(path, data: np.ndarray, block_size: int, order=None, crs="EPSG:32611", band: Band = HEIGHTS) -> np.ndarray:
    grid = OutputGrid(CRS.from_user_input(crs), 0.5, 300000.0, 4100000.0, data.shape[1], data.shape[0])
    blocks = iter_blocks(grid.height, grid.width, block_size)
    read = lambda b: data[b.row : b.row + b.height, b.col : b.col + b.width]  # noqa: E731
    with StreamingCog(grid, blocks, block_size, read, path.parent, threads=2, band=band) as writer:
        for block in order(blocks) if order else blocks:
            writer.block_done(block)
        return writer.finish(path, TAGS)


@pytest.mark.parametrize("shape, block_size", [((1100, 1337), 300), ((300, 200), 128), ((2051, 700), 1024)])
def test_gdal_reads_back_every_pixel_and_the_overviews_are_gdals_average(tmp_path, shape, block_size):
    data = _heights(*shape)
    ours = tmp_path / "ours.tif"
    counts = _write(ours, data, block_size)
    assert cog_validate(ours, strict=True) == (True, [], [])
    with rasterio.open(ours) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"  # GDAL's own test: the ghost header and the tiles' leaders
        assert np.array_equal(src.read(1), data, equal_nan=True)
        assert src.tags()["canopy_model"] == "test" and src.descriptions == ("canopy height (m)",) and src.units == ("m",)
        assert np.isnan(src.nodata) and src.crs.to_epsg() == 32611 and src.transform.c == 300000.0
        factors = src.overviews(1)
    assert len(factors) == overview_count(shape[1], shape[0])
    gdal = tmp_path / "gdal.tif"
    rasterio.shutil.copy(ours, gdal, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", PREDICTOR="FLOATING_POINT",
                         OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE")
    with rasterio.open(ours) as a, rasterio.open(gdal) as b:
        assert a.overviews(1) == b.overviews(1)
        for f in factors:
            shape_f = (-(-shape[0] // f), -(-shape[1] // f))
            mine, theirs = a.read(1, out_shape=shape_f), b.read(1, out_shape=shape_f)
            assert np.array_equal(np.isnan(mine), np.isnan(theirs)), f
            assert np.nanmax(np.abs(mine - theirs)) <= 1e-5 * np.nanmax(np.abs(theirs)), f
    finite = data[np.isfinite(data)]
    assert counts.sum() == finite.size


def test_the_bytes_do_not_depend_on_the_order_blocks_finish_in(tmp_path):
    data = _heights(1300, 1100)
    in_order, shuffled = tmp_path / "a" / "map.tif", tmp_path / "b" / "map.tif"
    in_order.parent.mkdir(), shuffled.parent.mkdir()
    _write(in_order, data, 256)
    _write(shuffled, data, 256, order=lambda blocks: random.Random(1).sample(blocks, len(blocks)))
    assert in_order.read_bytes() == shuffled.read_bytes()
    assert not list(in_order.parent.glob("tiles.bin"))  # the scratch file is gone


def test_a_map_past_4_gb_is_written_as_bigtiff(tmp_path, monkeypatch):
    monkeypatch.setattr(cog, "_BIGTIFF_FROM", 0)
    data = _heights(700, 900)
    path = tmp_path / "big.tif"
    _write(path, data, 512, crs="EPSG:4326")
    assert path.read_bytes()[:4] == b"II+\0"
    assert cog_validate(path, strict=True) == (True, [], [])
    with rasterio.open(path) as src:
        assert np.array_equal(src.read(1), data, equal_nan=True) and src.crs.to_epsg() == 4326


def test_a_missing_block_is_an_error_not_a_hole(tmp_path):
    data = _heights(600, 600)
    grid = OutputGrid(CRS.from_epsg(32611), 0.5, 300000.0, 4100000.0, 600, 600)
    blocks = iter_blocks(600, 600, 256)
    with StreamingCog(grid, blocks, 256, lambda b: data[b.row : b.row + b.height, b.col : b.col + b.width], tmp_path) as writer:
        for block in blocks[1:]:
            writer.block_done(block)
        with pytest.raises(RuntimeError, match="not all written"):
            writer.finish(tmp_path / "map.tif", TAGS)


def test_the_tile_codec_is_what_gdal_decodes(tmp_path):
    """One tile written by hand into GDAL's own file layout reads back as the values."""
    tile = _heights(512, 512)[:512, :512]
    path = tmp_path / "gdal.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1, dtype="float32", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", predictor=3, zlevel=6) as dst:
        dst.write(tile, 1)
    import zlib

    from canopy.io.tiff_file import read_ifd_tags

    offsets = read_ifd_tags(str(path), (324, 325))
    offset = int.from_bytes(offsets[324][2][:4], "little")
    size = int.from_bytes(offsets[325][2][:4], "little")
    theirs = path.read_bytes()[offset : offset + size]
    assert zlib.decompress(encode_tile(tile)) == zlib.decompress(theirs)  # the predictor's bytes are GDAL's


def test_a_run_bounds_gdals_block_cache_unless_the_user_set_it(tmp_path, monkeypatch):
    import warnings

    from rasterio._env import get_gdal_config

    import canopy
    from rasters import NEON

    options = dict(model="dinov2_vits14", weights="random", res=1.0, chip_size=28, block_size=16, device="cpu", precision="fp32")
    outside = int(get_gdal_config("GDAL_CACHEMAX"))
    for user_set, expected in ((False, 256), (True, outside)):
        if user_set:
            monkeypatch.setenv("GDAL_CACHEMAX", str(outside))
        seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            canopy.predict(NEON / "TEAK_043_rgb.tif", progress=lambda p: seen.append(get_gdal_config("GDAL_CACHEMAX")), **options)
        assert seen and {int(v) for v in seen} == {expected}
        assert int(get_gdal_config("GDAL_CACHEMAX")) == outside  # given back after the run


def test_a_class_mask_is_a_paletted_cog_whose_overviews_keep_the_most_frequent_class(tmp_path):
    rng = np.random.default_rng(2)
    classes = (rng.random((1100, 1337)) < 0.3).astype(np.uint8)  # 1 where 30 % of the pixels are
    classes[:40] = 255
    classes[200:260, 300:400] = 1
    path = tmp_path / "mask.tif"
    band = Band("forest", "uint8", 255, {0: "#efe9d6", 1: "#1e7832"})
    _write(path, classes, 300, band=band)
    assert cog_validate(path, strict=True) == (True, [], [])
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.dtypes == ("uint8",) and src.nodata == 255
        assert src.colormap(1)[1] == (30, 120, 50, 255) and src.colormap(1)[0] == (239, 233, 214, 255)
        assert np.array_equal(src.read(1), classes) and src.descriptions == ("forest",)
        half = src.read(1, out_shape=(550, 669))
    quads = np.stack([classes[i::2, j::2][:550, :668] for i in (0, 1) for j in (0, 1)])
    ones = ((quads == 1).sum(0), (quads == 0).sum(0), (quads != 255).sum(0))
    assert (half[:550, :668][ones[0] > 2] == 1).all() and (half[:550, :668][ones[1] > 2] == 0).all()  # a majority wins
    assert (half[:550, :668][ones[2] == 0] == 255).all() and (half[20:, :][half[20:, :] == 255].size == 0)  # no data only where all are
    assert (half[100:130, 150:200] == 1).all()
