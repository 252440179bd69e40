"""Blending overlapping chip predictions into a block: weighted accumulation, NaN where no imagery."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from canopy.tiling.block_input import BlockInput
from canopy.tiling.chips import ChipLayout

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of chips (B, 3, S, S) in [0, 1] to heights (B, S, S) in metres."""


def _batches(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_block(inp: BlockInput, layout: ChipLayout, predict: PredictFn, batch_size: int) -> np.ndarray:
    """Predict every chip touching a block and blend them into the block's heights.

    Each chip's prediction is weighted by the layout's window (smooth, strictly positive), and the
    weighted sum is divided by the summed weights. Chips are visited in lattice order, so a pixel's
    value does not depend on how the grid was cut into blocks. Chips with no valid pixel are skipped.

    Parameters
    ----------
    inp
        The block's imagery.
    layout
        The chip lattice.
    predict
        The model on a batch of chips.
    batch_size
        Chips per call of ``predict``.

    Returns
    -------
    numpy.ndarray
        float32 (height, width) of the block; NaN where there is no imagery.
    """
    block, size = inp.block, layout.size
    weights = layout.window()
    total = np.zeros((block.height, block.width), np.float32)
    weight_sum = np.zeros_like(total)
    chips = [
        (r, c)
        for r in inp.chip_rows
        for c in inp.chip_cols
        if inp.valid[r - inp.row0 : r - inp.row0 + size, c - inp.col0 : c - inp.col0 + size].any()
    ]
    for batch in _batches(chips, batch_size):
        stack = np.stack(
            [inp.rgb[:, r - inp.row0 : r - inp.row0 + size, c - inp.col0 : c - inp.col0 + size] for r, c in batch]
        )
        heights = predict(np.ascontiguousarray(stack))
        for (r, c), height in zip(batch, heights):
            top, bottom = max(r, block.row), min(r + size, block.row + block.height)
            left, right = max(c, block.col), min(c + size, block.col + block.width)
            chip_part = (slice(top - r, bottom - r), slice(left - c, right - c))
            block_part = (slice(top - block.row, bottom - block.row), slice(left - block.col, right - block.col))
            total[block_part] += weights[chip_part] * height[chip_part]
            weight_sum[block_part] += weights[chip_part]
    out = np.full_like(total, np.nan)
    good = inp.block_valid & (weight_sum > 0)
    out[good] = total[good] / weight_sum[good]
    return out
