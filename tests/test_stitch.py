"""Property tests of chipping and blending, alone and through the whole predict pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rio_cogeo.cogeo import cog_validate

import canopy.runtime.block_worker as block_worker
from canopy.grid import OutputGrid, iter_blocks, snap_grid
from canopy.imagery import GeoTiffSource, read_mosaic
from canopy.models import get_model_spec
from canopy.models.height_model import LoadedModel
from canopy.prediction import RunSummary, predict
from canopy.runtime.stitch import BorderChips, predict_block
from canopy.tiling import ChipLayout
from canopy.tiling.block_input import read_block
from rasters import smooth_rgb, write_raster

ORIGIN = Affine(0.5, 0, 321000.0, 0, -0.5, 4097000.0)


@pytest.fixture
def scene(tmp_path):
    """A 90 x 70 px smooth RGB GeoTIFF at 0.5 m, and a grid over it that reaches 5 px beyond on every side."""
    path = write_raster(tmp_path / "scene.tif", width=90, height=70, transform=ORIGIN, data=smooth_rgb(70, 90))
    source = GeoTiffSource(path)
    grid = snap_grid((321000.0 - 2.5, 4097000.0 - 35 - 2.5, 321045.0 + 2.5, 4097000.0 + 2.5), source.crs, 0.5)
    yield source, grid
    source.close()


def _stitch(source, grid: OutputGrid, layout: ChipLayout, fn, block_size: int, batch_size: int = 3) -> np.ndarray:
    out = np.full(grid.shape, np.nan, np.float32)
    fill = np.full(3, 0.5, np.float32)
    block_size = layout.block_size(block_size)
    borders = BorderChips(block_size, grid.shape, lambda key: pytest.fail(f"block {key} was not computed before its neighbours"))
    for block in iter_blocks(grid.height, grid.width, block_size):
        inp = read_block([source], grid, block, layout, fill)
        (heights, _), _ = predict_block(inp, layout, fn, batch_size, borders)
        out[block.row : block.row + block.height, block.col : block.col + block.width] = heights
    return out


def _inside(grid: OutputGrid) -> np.ndarray:
    inside = np.zeros(grid.shape, bool)
    inside[5:-5, 5:-5] = True
    return inside


def test_constant_model_gives_a_constant_map_with_no_zero_border(scene):
    source, grid = scene
    out = _stitch(source, grid, ChipLayout(28, 8, 14), lambda c: np.full(c[:, 0].shape, 7.25, np.float32), 23)
    inside = _inside(grid)
    np.testing.assert_allclose(out[inside], 7.25, rtol=1e-6)
    assert np.isnan(out[~inside]).all()


def test_identity_model_reproduces_the_input_on_the_output_grid(scene):
    source, grid = scene
    out = _stitch(source, grid, ChipLayout(28, 10, 14), lambda c: c[:, 0].copy(), 19)
    expected = read_mosaic([source], grid)
    np.testing.assert_allclose(out[expected.valid], expected.rgb[0][expected.valid], rtol=0, atol=1e-6)
    assert np.isnan(out[~expected.valid]).all()


def test_tiled_run_equals_a_single_pass_for_a_local_model(scene):
    source, grid = scene
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)

    def local_model(chips: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return conv(torch.from_numpy(chips))[:, 0].numpy()

    layout = ChipLayout(28, 12, 14)
    tiled = _stitch(source, grid, layout, local_model, block_size=17, batch_size=2)
    single = _stitch(source, grid, layout, local_model, block_size=10_000, batch_size=64)
    assert np.isnan(tiled).sum() == np.isnan(single).sum() > 0
    np.testing.assert_allclose(tiled, single, rtol=1e-5, atol=1e-6, equal_nan=True)


class _Constant(torch.nn.Module):
    def forward(self, x):
        return torch.full_like(x[:, :1], 3.5)


class _FirstBand(torch.nn.Module):
    def forward(self, x):
        return x[:, :1].clone()


def _fake_loader(module):
    spec = get_model_spec("dinov2_vits14")

    def load(ref, **kwargs):
        return LoadedModel(module, spec, "sha-of-test", "none")

    return load


@pytest.mark.parametrize(("module", "kind"), [(_Constant(), "constant"), (_FirstBand(), "identity")])
def test_full_pipeline_properties_and_file_grid(scene, tmp_path, monkeypatch, module, kind):
    source, grid = scene
    monkeypatch.setattr(block_worker, "load_height_model", _fake_loader(module))
    out = tmp_path / f"{kind}.tif"
    bbox = grid.bounds
    result = predict(source.path, bbox, bbox_crs="EPSG:32611", model="dinov2_vits14", out=out, res=0.5, chip_size=28, overlap=8, block_size=32)
    with rasterio.open(out) as dst:
        assert dst.crs == grid.crs and dst.res == (0.5, 0.5)
        assert dst.bounds == pytest.approx(grid.bounds)
        data = dst.read(1)
        assert dst.tags()["canopy_weights"] == "sha-of-test"
    assert cog_validate(out, strict=True) == (True, [], [])
    expected = read_mosaic([source], grid)
    if kind == "constant":
        np.testing.assert_allclose(data[expected.valid], 3.5, rtol=1e-6)
    else:
        np.testing.assert_allclose(data[expected.valid], expected.rgb[0][expected.valid], atol=1e-6)
    assert np.isnan(data[~expected.valid]).all() and (~expected.valid).sum() > 0
    np.testing.assert_array_equal(result.values, data)
    assert result.rio.crs == grid.crs and result.rio.transform() == grid.transform


class _CountingModel(torch.nn.Module):
    """A pixel-wise model (so batching cannot change its bits) that counts the chips it is given."""

    def __init__(self):
        super().__init__()
        self.chips = 0
        self.batches = []

    def forward(self, x):
        self.chips += x.shape[0]
        self.batches.append(x.shape[0])
        return 2.0 * x[:, :1] + x[:, 1:2]


def test_every_chip_is_computed_once_whatever_the_block_size(scene, tmp_path, monkeypatch):
    source, grid = scene
    layout = ChipLayout(28, 8, 14)
    lattice = len(layout.starts(grid.height)) * len(layout.starts(grid.width))
    maps = {}
    for block_size in (20, 45, 1000):
        model = _CountingModel()
        monkeypatch.setattr(block_worker, "load_height_model", _fake_loader(model))
        result = predict(source.path, grid.bounds, bbox_crs="EPSG:32611", model="dinov2_vits14", res=0.5,
                         chip_size=28, overlap=8, block_size=block_size, batch_size=3)
        summary = RunSummary.from_attrs(result.attrs)
        assert model.chips == summary.chips == lattice == 4 * 5, block_size
        assert sum(size < 3 for size in model.batches) <= summary.blocks_computed  # full batches but each block's last
        assert summary.block_size % layout.stride == 0 and summary.blocks_computed > (1 if block_size < 100 else 0)
        assert summary.chip_pixels_per_output_pixel == pytest.approx(lattice * 28**2 / (grid.height * grid.width))
        maps[block_size] = result.values
    assert layout.overlap_factor() == pytest.approx((28 / 20) ** 2)
    np.testing.assert_array_equal(maps[20], maps[1000])
    np.testing.assert_array_equal(maps[45], maps[1000])


def test_block_sizes_are_put_on_the_chip_lattice():
    layout = ChipLayout(256, 64, 16)
    assert layout.block_size(2048) == 2112 and layout.block_size(10) == 192
    assert ChipLayout(256, 192, 16).block_size(64) == 192  # at least the overlap: chips reach only the next block


def test_one_neighbour_rule_names_the_blocks_that_hand_chips_on_and_when_they_are_done():
    from canopy.grid import Block
    from canopy.runtime.stitch import handing_on, needed_after

    step = 42
    assert handing_on(Block(0, 0, step, step), step) == []
    assert handing_on(Block(0, 2 * step, step, step), step) == [(0, step)]
    assert handing_on(Block(step, 0, step, step), step) == [(0, 0)]
    assert handing_on(Block(2 * step, step, step, 10), step) == [(step, 0), (step, step), (2 * step, 0)]
    block = Block(3 * step, 0, step, step)
    assert needed_after((2 * step, 5 * step), block, step)  # the row above still hands on to the rest of this row
    assert not needed_after((step, 5 * step), block, step)  # two rows up: no later block needs it


def test_only_chips_over_imagery_are_predicted():
    from canopy.grid import Block
    from canopy.runtime.stitch import predict_chips
    from canopy.tiling.block_input import BlockInput

    layout = ChipLayout(28, 14, 14)
    valid = np.zeros((42, 28), bool)
    valid[30:, :] = True  # imagery starts two rows below the first chip's window
    for transposed in (False, True):  # and two columns right of it
        mask = valid.T if transposed else valid
        block = Block(14, 14, 14, 28) if transposed else Block(14, 14, 28, 14)
        rows, cols = ([14], [14, 28]) if transposed else ([14, 28], [14])
        inp = BlockInput(block, np.zeros((3, *mask.shape), np.float32), mask, 14, 14, rows, cols)
        seen = []
        chips = predict_chips(inp, layout, lambda batch: seen.append(len(batch)) or np.zeros(batch[:, 0].shape, np.float32), 8)
        assert sorted(chips) == [(14, 28) if transposed else (28, 14)] and seen == [1]


def test_the_chips_handed_on_are_exactly_those_that_reach_a_later_block():
    from canopy.grid import Block
    from canopy.runtime.stitch import border_chips

    layout, shape = ChipLayout(28, 14, 14), (70, 42)  # a grid taller than wide, blocks of one chip stride
    cases = {
        Block(56, 0, 14, 14): {(56, 0)},  # the last row: handed right only
        Block(42, 28, 14, 14): {(42, 28)},  # the last column: handed down only
        Block(56, 28, 14, 14): set(),  # the last block: nothing after it
    }
    for block, expected in cases.items():
        assert set(border_chips(block, layout, {(block.row, block.col): np.zeros((28, 28))}, shape)) == expected, block
        wide = Block(block.col, block.row, block.width, block.height)  # the same on a grid wider than tall
        handed = border_chips(wide, layout, {(wide.row, wide.col): np.zeros((28, 28))}, shape[::-1])
        assert set(handed) == {(c, r) for r, c in expected}, wide
    flush = ChipLayout(28, 0, 14)  # a chip that ends where its block ends reaches no other block
    assert border_chips(Block(0, 0, 28, 28), flush, {(0, 0): np.zeros((28, 28))}, shape) == {}
