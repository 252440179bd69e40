"""The chip lattice, the blending window and mirror padding."""

from __future__ import annotations

import numpy as np
import pytest

from canopy.grid import iter_blocks
from canopy.tiling import ChipLayout, reflect_index


def test_chip_sizes_must_fit_the_patch():
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        ChipLayout(100, 10, 14)
    with pytest.raises(ValueError, match="less than the chip size"):
        ChipLayout(112, 112, 14)


@pytest.mark.parametrize("length", [1, 50, 112, 113, 200, 1000])
def test_chips_cover_every_pixel(length):
    layout = ChipLayout(112, 28, 14)
    starts = layout.starts(length)
    assert starts[0] == 0 and starts[-1] + 112 >= length
    assert all(b - a == 84 for a, b in zip(starts, starts[1:]))
    assert len(starts) == 1 or starts[-2] + 112 < length


def test_starts_touching_a_block_are_the_global_lattice():
    layout = ChipLayout(112, 28, 14)
    assert layout.starts_touching(100, 200, 1000) == [0, 84, 168]
    assert set(layout.starts_touching(0, 1000, 1000)) == set(layout.starts(1000))


def test_window_is_smooth_and_strictly_positive():
    w = ChipLayout(56, 14, 14).window()
    assert w.shape == (56, 56) and w.min() > 0 and w.min() >= 1e-4
    assert w[28, 28] == pytest.approx(w.max())
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])


def test_reflect_index_mirrors_about_the_edges():
    idx = reflect_index(np.arange(-3, 8), 5)
    assert idx.tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert reflect_index(np.arange(-2, 3), 1).tolist() == [0, 0, 0, 0, 0]
    far = reflect_index(np.arange(-20, 30), 4)
    assert far.min() == 0 and far.max() == 3


def test_blocks_tile_the_grid():
    blocks = iter_blocks(100, 70, 32)
    covered = np.zeros((100, 70), int)
    for b in blocks:
        covered[b.row : b.row + b.height, b.col : b.col + b.width] += 1
    assert (covered == 1).all()
    assert len({b.key for b in blocks}) == len(blocks)
