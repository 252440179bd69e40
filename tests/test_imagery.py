"""Reading imagery: nodata rules, alpha bands, band selection and region-wide radiometric scaling."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from affine import Affine

from canopy.errors import AmbiguousNodataWarning, ImageryError
from canopy.grid import snap_grid
from canopy.imagery import GeoTiffSource, open_imagery, read_mosaic
from canopy.imagery.radiometry import Scaling, describe_scalings, region_scaling, scaling_for_region
from canopy.prediction import predict
from rasters import cut_tiles, smooth_rgb, write_raster

ORIGIN = Affine(0.5, 0, 321000.0, 0, -0.5, 4097000.0)


def test_a_255_collar_is_masked_but_enclosed_saturated_pixels_are_kept(tmp_path):
    data = smooth_rgb(60, 60)
    data[:, :8, :] = 255  # collar along the top ...
    data[:, -8:, :] = 255  # ... and the bottom
    data[:, 30:32, 30:32] = 255  # saturated pixels inside the image
    path = write_raster(tmp_path / "collar.tif", data=data, width=60, height=60, nodata=255, transform=ORIGIN)
    with pytest.warns(AmbiguousNodataWarning, match="masks 255 where it is connected to the collar"):
        source = GeoTiffSource(path)
    with source:
        patch = source.read(snap_grid(source.bounds, source.crs, 0.5))
    assert not patch.valid[:8].any() and not patch.valid[-8:].any()
    assert patch.valid[8:-8].all()
    assert (patch.rgb[:, 30:32, 30:32] == 1.0).all()


def test_without_a_collar_255_is_data_and_that_is_said(tmp_path):
    data = smooth_rgb(40, 40)
    data[:, 10, 10] = 255
    path = write_raster(tmp_path / "no_collar.tif", data=data, width=40, height=40, nodata=255, transform=ORIGIN)
    with pytest.warns(AmbiguousNodataWarning, match="reads pixels of 255 as data"):
        source = GeoTiffSource(path)
    with source:
        assert source.read(snap_grid(source.bounds, source.crs, 0.5)).valid.all()


def _rgba(path, height: int, width: int, transparent_columns: int):
    """An RGB raster with an alpha band that hides its first columns."""
    rgba = np.concatenate([smooth_rgb(height, width), np.full((1, height, width), 255, np.uint8)])
    rgba[3, :, :transparent_columns] = 0
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="uint8", crs="EPSG:32611",
                       transform=ORIGIN) as dst:
        dst.write(rgba)
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    return path


def test_other_nodata_values_and_alpha_bands_mark_missing_pixels(tmp_path):
    data = smooth_rgb(40, 40)
    data[:, :5, :] = 0
    path = write_raster(tmp_path / "nodata0.tif", data=data, width=40, height=40, nodata=0, transform=ORIGIN)
    with GeoTiffSource(path) as source:
        patch = source.read(snap_grid(source.bounds, source.crs, 0.5))
    assert not patch.valid[:5].any() and patch.valid[5:].all()
    with GeoTiffSource(_rgba(tmp_path / "rgba.tif", 40, 40, transparent_columns=10)) as source:
        patch = source.read(snap_grid(source.bounds, source.crs, 0.5))
    assert not patch.valid[:, :10].any() and patch.valid[:, 10:].all()


def test_band_selection_and_four_band_imagery(tmp_path):
    rgbn = np.concatenate([smooth_rgb(40, 40, seed=1), np.full((1, 40, 40), 7, np.uint8)])
    path = write_raster(tmp_path / "rgbn.tif", data=rgbn, width=40, height=40, count=4, transform=ORIGIN)
    grid = snap_grid((321000.0, 4096980.0, 321020.0, 4097000.0), rasterio.crs.CRS.from_epsg(32611), 0.5)
    with GeoTiffSource(path) as default, GeoTiffSource(path, bands=[4, 2, 1]) as chosen:
        assert default.bands == [1, 2, 3]
        a, b = default.read(grid), chosen.read(grid)
    np.testing.assert_allclose(b.rgb[0], 7 / 255)
    np.testing.assert_array_equal(b.rgb[2], a.rgb[0])
    with pytest.raises(ImageryError, match=r"Bands \[1, 2, 9\] do not name three of the 4 bands"):
        GeoTiffSource(path, bands=[1, 2, 9])


def test_uint16_tiles_share_one_scaling_computed_for_the_region(tmp_path):
    rgb16 = smooth_rgb(80, 80).astype(np.uint16) * 40 + 1000
    path = write_raster(tmp_path / "big16.tif", data=rgb16, width=80, height=80, dtype="uint16", transform=ORIGIN)
    cut_tiles(path, tmp_path / "tiles")
    with open_imagery([tmp_path / "tiles"]) as opened:
        sources = opened.open()
        assert len(sources) == 1 and "mosaic of 4 tiles" in sources[0].name
        crs = sources[0].crs
    separate = [GeoTiffSource(p) for p in sorted((tmp_path / "tiles").glob("*.tif"))]
    grid = snap_grid((321000.0, 4096960.0, 321040.0, 4097000.0), crs, 0.5)
    scaling = scaling_for_region(separate, grid)
    assert describe_scalings([scaling]).startswith("percentiles 2-98 over the region")
    with pytest.raises(ImageryError, match="open it with the region's scaling"):
        separate[0].read(grid)
    scaled = [GeoTiffSource.from_ref(replace(s.ref, scaling=scaling)) for s in separate]
    for s in separate:
        s.close()
    patch = read_mosaic(scaled, grid)
    assert patch.rgb.min() == 0.0 and patch.rgb.max() == 1.0
    for s in scaled:
        s.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = tmp_path / "h.tif"
        predict(tmp_path / "tiles", grid.bounds, bbox_crs="EPSG:32611", model="dinov2_vits14", weights="random", chip_size=56, out=out)
    with rasterio.open(out) as dst:
        assert dst.tags()["canopy_radiometry"].startswith("percentiles 2-98 over the region: low=")


def test_uint8_scaling_is_division_by_255():
    values = np.array([[[0.0, 51.0, 255.0]]] * 3, np.float32)
    np.testing.assert_allclose(Scaling.for_uint8().apply(values)[0, 0], [0.0, 0.2, 1.0])


def test_the_tag_says_which_sources_are_stretched_and_a_scaling_is_a_fixed_record():
    from dataclasses import FrozenInstanceError

    stretched = Scaling((100.0, 110.0, 120.0), (900.0, 910.0, 920.0))
    assert describe_scalings([Scaling.for_uint8()]) == "uint8 / 255"
    assert describe_scalings([stretched]) == "percentiles 2-98 over the region: low=[100.0, 110.0, 120.0] high=[900.0, 910.0, 920.0]"
    assert describe_scalings([stretched, Scaling.for_uint8()]) == f"{stretched.describe()}; uint8 sources / 255"
    with pytest.raises(FrozenInstanceError):
        stretched.low = (0.0, 0.0, 0.0)


def test_a_region_with_no_valid_pixel_or_no_spread_is_refused_by_name():
    with pytest.raises(ImageryError, match="^u16.tif has no valid pixel over the region"):
        region_scaling([], "u16.tif")
    with pytest.raises(ImageryError, match="^u16.tif has no valid pixel over the region"):
        region_scaling([np.zeros((3, 0)), np.zeros((3, 0))], "u16.tif")
    with pytest.raises(ImageryError, match="^u16.tif has a band with no spread over the region"):
        region_scaling([np.array([[5.0], [6.0], [7.0]])], "u16.tif")  # one pixel: there is data, but no stretch to find


def _mask_kinds(tmp_path):
    """Rasters whose missing pixels are marked each way GDAL knows: nodata value, alpha band, internal mask, a collar."""
    data = smooth_rgb(50, 70)
    data[:, :6, :] = 0
    data[1, 20:24, 30:34] = 0  # one band at nodata: the pixel still has data
    yield write_raster(tmp_path / "nodata0.tif", data=data, width=70, height=50, nodata=0, transform=ORIGIN)
    yield _rgba(tmp_path / "rgba.tif", 50, 70, transparent_columns=9)
    path = tmp_path / "mask.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
        path, "w", driver="GTiff", width=70, height=50, count=3, dtype="uint8", crs="EPSG:32611", transform=ORIGIN
    ) as dst:
        dst.write(smooth_rgb(50, 70))
        mask = np.full((50, 70), 255, np.uint8)
        mask[40:, :] = 0
        dst.write_mask(mask)
    yield path
    collar = smooth_rgb(50, 70)
    collar[:, :7, :] = 255
    collar[:, 20:23, 40:43] = 255
    yield write_raster(tmp_path / "collar.tif", data=collar, width=70, height=50, nodata=255, transform=ORIGIN)


def test_a_grid_that_is_the_rasters_own_is_read_as_warping_would_give_it(tmp_path, monkeypatch):
    """The direct read of an aligned grid gives the warped read's values and validity, whatever marks missing pixels."""
    for path in _mask_kinds(tmp_path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = GeoTiffSource(path)
        with source:
            grid = snap_grid(source.bounds, source.crs, 0.5)
            window = replace(grid, left=grid.left - 2.0, top=grid.top - 1.5, width=grid.width + 3, height=grid.height + 2)
            assert source._aligned(source._frame(window)[0]) is not None
            direct = source.read_raw(window)
            with monkeypatch.context() as patch:
                patch.setattr(GeoTiffSource, "_aligned", lambda self, frame: None)
                warped = source.read_raw(window)
        assert np.array_equal(direct[1], warped[1]), f"{path.name}: validity"
        assert np.array_equal(direct[0][:, direct[1]], warped[0][:, warped[1]]), f"{path.name}: values"
        assert not direct[1].all() and direct[1].any(), path.name


def test_saturated_pixels_connected_to_the_collar_elsewhere_are_masked_in_every_window(tmp_path):
    """Whether 255s are enclosed is decided over the whole raster, not within the window read."""
    data = smooth_rgb(60, 60)
    data[:, :8, :] = 255  # the collar
    data[:, 8:40, 30] = 255  # a channel of 255s down from the collar ...
    data[:, 38:42, 28:34] = 255  # ... into a pool: masked
    data[:, 28:33, 10:14] = 255  # saturated pixels really enclosed, cut by the window's edge at row 30
    path = write_raster(tmp_path / "collar.tif", data=data, width=60, height=60, nodata=255, transform=ORIGIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = GeoTiffSource(path)
    with source:
        grid = snap_grid(source.bounds, source.crs, 0.5)
        whole = source.read(grid).valid
        lower = source.read(replace(grid, top=grid.top - 30 * 0.5, height=30)).valid
    assert not whole[38:42, 28:34].any() and whole[28:33, 10:14].all()
    assert np.array_equal(lower, whole[30:])  # read alone, the lower window sees the saturated pixels touch its edge


@pytest.mark.parametrize("ratio", [2, 5])
def test_finer_imagery_is_averaged_onto_the_output_grid(tmp_path, ratio):
    """NEON's 0.1 m pixels onto a 0.2 or 0.5 m grid: each output pixel is the mean of the source pixels it covers."""
    data = np.random.default_rng(ratio).integers(0, 256, (3, 20 * ratio, 20 * ratio)).astype("uint8")
    path = write_raster(tmp_path / "fine.tif", data=data, width=20 * ratio, height=20 * ratio,
                        transform=Affine(0.1, 0, 321000.0, 0, -0.1, 4097000.0))
    with GeoTiffSource(path) as source:
        rgb = source.read(snap_grid((321000.0, 4097000.0 - 2 * ratio, 321000.0 + 2 * ratio, 4097000.0), source.crs, 0.1 * ratio)).rgb
    means = data.reshape(3, 20, ratio, 20, ratio).mean(axis=(2, 4)) / 255
    assert rgb.shape == means.shape
    assert np.abs(rgb - means).max() <= 0.5 / 255 + 1e-6  # GDAL rounds the mean back to the source's 8 bits


def test_the_stretch_of_16_bit_imagery_runs_from_the_2nd_to_the_98th_percentile(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.integers(1000, 3000, (3, 60, 60)).astype(np.uint16)
    data[:, :3] = 60000  # 5 % bright outliers (clouds, glints), which a min-max stretch would let set the scale
    data[:, -1, :30] = 0
    path = write_raster(tmp_path / "u16.tif", data=data, width=60, height=60, dtype="uint16", transform=ORIGIN)
    with GeoTiffSource(path) as source:
        grid = snap_grid((321000.0, 4096970.0, 321030.0, 4097000.0), source.crs, 0.5)
        scaling = scaling_for_region([source], grid)
        low, high = np.percentile(data.reshape(3, -1), [2, 98], axis=1)
        np.testing.assert_allclose(scaling.low, low, rtol=1e-6)
        np.testing.assert_allclose(scaling.high, high, rtol=1e-6)
    with GeoTiffSource.from_ref(replace(source.ref, scaling=scaling)) as scaled:
        rgb = scaled.read(grid).rgb
    expected = np.clip((data - low[:, None, None]) / (high - low)[:, None, None], 0, 1)
    np.testing.assert_allclose(rgb, expected, atol=1e-5)
    assert 0.04 < (rgb == 1.0).mean() < 0.08 and 0.01 < (rgb == 0.0).mean() < 0.05  # the tails are clipped, not stretched over


@pytest.mark.parametrize(("order", "winner"), [("finest", 100), ("latest", 200), ("given", 10)])
def test_the_mosaic_order_decides_which_overlapping_source_is_read(tmp_path, order, winner):
    from canopy.choices import MosaicOrder
    from canopy.imagery.source import ImageryOptions

    paths = []
    for name, res, year, value in [("a", 0.5, 2020, 10), ("b", 0.25, 2018, 100), ("c", 0.4, 2023, 200)]:
        size = int(round(20 / res))
        path = write_raster(tmp_path / f"{name}.tif", data=np.full((3, size, size), value, np.uint8), width=size, height=size,
                            transform=Affine(res, 0, 321000.0, 0, -res, 4097000.0))
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(TIFFTAG_DATETIME=f"{year}:06:01 12:00:00")
        paths.append(path)
    with open_imagery(paths, options=ImageryOptions(order=MosaicOrder(order))) as opened:
        sources = opened.open()
        grid = snap_grid((321002.0, 4096982.0, 321018.0, 4096998.0), sources[0].crs, 1.0)
        rgb = read_mosaic(sources, grid).rgb
    np.testing.assert_array_equal(rgb, np.float32(winner / 255))
