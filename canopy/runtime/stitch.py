"""Chip predictions and their blending into blocks: each chip computed once, weighted accumulation, NaN where no imagery.

A block computes the chips whose origins lie in it (:func:`predict_chips`) and blends every chip
that covers its pixels (:func:`blend`): its own, and those of the blocks above and to the left
whose chips reach into it (:func:`border_chips` picks them out, to be handed on). Chips are blended
in lattice order whichever block computed them, so a pixel gets the same chips, with the same inputs,
however the grid was cut into blocks (the kernels' rounding of a chip may still depend on its batch
mates, within the bound of :mod:`canopy.runtime.numerics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from canopy.tiling.block_input import BlockInput
from canopy.grid import Block
from canopy.io.partial import Blended, ChipHeights
from canopy.tiling.chips import ChipLayout

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of chips (B, 3, S, S) in [0, 1] to heights (B, S, S) in metres, or with ``--uncertainty`` to
(B, 2, S, S): heights and the variance of each chip's predicted height (m²)."""


def _batches(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_chips(inp: BlockInput, layout: ChipLayout, predict: PredictFn, batch_size: int) -> ChipHeights:
    """Predict every chip whose origin lies in a block, in lattice order; chips with no valid pixel are skipped.

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
    ChipHeights
    """
    size = layout.size
    origins = [
        (r, c)
        for r in inp.chip_rows
        for c in inp.chip_cols
        if inp.valid[r - inp.row0 : r - inp.row0 + size, c - inp.col0 : c - inp.col0 + size].any()
    ]
    chips: ChipHeights = {}
    for batch in _batches(origins, batch_size):
        stack = np.stack(
            [inp.rgb[:, r - inp.row0 : r - inp.row0 + size, c - inp.col0 : c - inp.col0 + size] for r, c in batch]
        )
        heights = predict(np.ascontiguousarray(stack))
        chips.update(zip(batch, heights))
    return chips


def border_chips(block: Block, layout: ChipLayout, chips: Mapping[tuple[int, int], np.ndarray],
                 shape: tuple[int, int]) -> ChipHeights:
    """The chips of a block that reach into a later block (right of it or below it, inside the grid's ``shape``)."""
    bottom, right = min(block.row + block.height, shape[0]), min(block.col + block.width, shape[1])
    return {
        (r, c): h
        for (r, c), h in chips.items()
        if (r + layout.size > bottom and bottom < shape[0]) or (c + layout.size > right and right < shape[1])
    }


def blend(block: Block, layout: ChipLayout, chips: Mapping[tuple[int, int], np.ndarray], valid: np.ndarray,
          spread: bool = False) -> Blended:
    """Blend the chips covering a block into its heights, and with ``spread`` their spread.

    Each chip's prediction is weighted by the layout's window (smooth, strictly positive), and the
    weighted sum is divided by the summed weights. Chips are added in lattice order, whichever
    block computed them. The spread (:class:`Blended`) is summed in a second pass, about the
    blended height, so that chips that agree give zero and not a difference of large squares.

    Parameters
    ----------
    block
        The block.
    layout
        The chip lattice.
    chips
        Every predicted chip that covers a pixel of the block (others are ignored): heights (S, S),
        or heights and variances (2, S, S) with ``spread``.
    valid
        (height, width) validity of the block's pixels; invalid ones become NaN.
    spread
        Also give the spread; the chips must then hold variances.

    Returns
    -------
    Blended
        float32 (height, width) heights (and spread) of the block; NaN where there is no imagery.
    """
    size = layout.size
    weights = layout.window()
    total = np.zeros((block.height, block.width), np.float32)
    weight_sum = np.zeros_like(total)
    parts = []
    for r, c in sorted(chips):
        top, bottom = max(r, block.row), min(r + size, block.row + block.height)
        left, right = max(c, block.col), min(c + size, block.col + block.width)
        if top >= bottom or left >= right:
            continue
        chip = chips[r, c]
        chip_part = (slice(top - r, bottom - r), slice(left - c, right - c))
        block_part = (slice(top - block.row, bottom - block.row), slice(left - block.col, right - block.col))
        total[block_part] += weights[chip_part] * (chip[0] if spread else chip)[chip_part]
        weight_sum[block_part] += weights[chip_part]
        parts.append((chip, chip_part, block_part))
    out = np.full_like(total, np.nan)
    good = valid & (weight_sum > 0)
    out[good] = total[good] / weight_sum[good]
    if not spread:
        return Blended(out)
    second = np.zeros_like(total)
    for chip, chip_part, block_part in parts:
        deviation = chip[0][chip_part] - out[block_part]
        second[block_part] += weights[chip_part] * (deviation * deviation + chip[1][chip_part])
    std = np.full_like(total, np.nan)
    std[good] = np.sqrt(second[good] / weight_sum[good])
    return Blended(out, std)


def handing_on(block: Block, step: int) -> list[tuple[int, int]]:
    """Origins of the blocks whose chips reach into ``block``: above-left, above and left of it, where they exist.

    The one neighbour rule of both engines: blocks are lattice-aligned squares of side ``step``, at
    least the chips' overlap, so a chip reaches no further than the next block right and below.
    """
    candidates = ((block.row - step, block.col - step), (block.row - step, block.col), (block.row, block.col - step))
    return [(row, col) for row, col in candidates if row >= 0 and col >= 0]


def needed_after(origin: tuple[int, int], block: Block, step: int) -> bool:
    """Whether the chips handed on by the block at ``origin`` may still be needed once ``block`` is blended,
    blocks being visited row by row: only the block rows of ``block`` and the one above it still hand on."""
    return origin[0] >= block.row - step


class BorderChips:
    """Chips that blocks hand on to the blocks right of them, below them and diagonally below-right.

    Blocks are visited row by row, so the chips a block needs from others were computed before it:
    in this run (kept in memory until no later block needs them) or, on ``--resume``, in the run
    it continues (read back with ``load``).

    Parameters
    ----------
    block_size
        The side of the lattice-aligned blocks.
    shape
        The grid's (height, width).
    load
        Reads the chips a block handed on in an earlier run, by block key.
    """

    def __init__(self, block_size: int, shape: tuple[int, int], load: Callable[[str], ChipHeights]) -> None:
        self.block_size = block_size
        self.shape = shape
        self._load = load
        self._kept: dict[tuple[int, int], ChipHeights] = {}

    def put(self, block: Block, chips: ChipHeights) -> None:
        """Keep the chips ``block`` hands on."""
        self._kept[block.row, block.col] = chips

    def around(self, block: Block) -> ChipHeights:
        """The chips of the blocks above, to the left and above-left of ``block``; forget what no later block needs."""
        step = self.block_size
        gathered: ChipHeights = {}
        for row, col in handing_on(block, step):
            if (row, col) not in self._kept:
                self._kept[row, col] = self._load(Block(row, col, step, step).key)
            gathered.update(self._kept[row, col])
        for origin in [o for o in self._kept if not needed_after(o, block, step)]:
            del self._kept[origin]
        return gathered


def blend_block(block: Block, layout: ChipLayout, own: ChipHeights, borders: BorderChips, valid: np.ndarray,
                calibrate: Callable[[np.ndarray], np.ndarray] | None = None, spread: bool = False) -> Blended:
    """Blend a block from its own chips and those the blocks before it handed on, then ``calibrate`` the heights
    (a :class:`~canopy.calibration.Calibration`'s ``apply``; the spread stays the model's own): the blend step of
    both engines."""
    blended = blend(block, layout, {**borders.around(block), **own}, valid, spread)
    return blended if calibrate is None else blended._replace(heights=calibrate(blended.heights))


def predict_block(
    inp: BlockInput, layout: ChipLayout, predict: PredictFn, batch_size: int, borders: BorderChips,
    calibrate: Callable[[np.ndarray], np.ndarray] | None = None, spread: bool = False,
) -> tuple[Blended, ChipHeights]:
    """Predict a block's own chips and blend them with the chips its neighbours handed on (in one process).

    A Dask run does the same in two tasks: :func:`predict_chips` and :func:`border_chips` in the
    first, :func:`blend_block` in the second.

    Parameters
    ----------
    inp
        The block's imagery.
    layout
        The chip lattice.
    predict
        The model on a batch of chips (giving variances with ``spread``).
    batch_size
        Chips per call of ``predict``.
    borders
        The chips handed on by the blocks before; this block's are added to it.
    calibrate
        Maps the blended heights (a calibration), or None.
    spread
        Also blend the chips' spread (``--uncertainty``).

    Returns
    -------
    Blended
        float32 (height, width) heights (and spread) of the block; NaN where there is no imagery.
    ChipHeights
        The block's chips that reach into later blocks, to be kept for a resumed run.
    """
    own = predict_chips(inp, layout, predict, batch_size)
    handed = border_chips(inp.block, layout, own, borders.shape)
    blended = blend_block(inp.block, layout, own, borders, inp.block_valid, calibrate, spread)
    borders.put(inp.block, handed)
    return blended, handed
