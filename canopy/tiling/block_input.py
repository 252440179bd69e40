"""The imagery a block needs: the block itself and every chip it owns, mirrored past the grid edge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canopy.errors import ImageryReadError
from canopy.grid import Block, OutputGrid
from canopy.imagery.mosaic import read_mosaic
from canopy.imagery.source import ImagerySource
from canopy.tiling.chips import ChipLayout, reflect_index


@dataclass
class BlockInput:
    """RGB (3, H, W) and validity (H, W) over a block and the chips whose origins lie in it.

    ``row0``/``col0`` are the grid coordinates of pixel (0, 0) of the arrays (the block's own
    origin); the arrays reach past the block, and past the grid, where its last chips do.
    ``chip_rows``/``chip_cols`` are the origins of the block's own chips in grid coordinates;
    either is empty for a block at the grid's end that holds no chip origin.
    """

    block: Block
    rgb: np.ndarray
    valid: np.ndarray
    row0: int
    col0: int
    chip_rows: list[int]
    chip_cols: list[int]

    @property
    def block_valid(self) -> np.ndarray:
        """Validity of the block's own pixels."""
        r, c = self.block.row - self.row0, self.block.col - self.col0
        return self.valid[r : r + self.block.height, c : c + self.block.width]


def read_block(
    sources: list[ImagerySource], grid: OutputGrid, block: Block, layout: ChipLayout, fill: np.ndarray
) -> BlockInput:
    """Read the imagery under a block and under every chip whose origin lies in it.

    Parameters
    ----------
    sources
        Imagery in priority order.
    grid
        The whole output grid.
    block
        The block to predict; its chips are those of the lattice that start inside it.
    layout
        The chip lattice.
    fill
        RGB (3,) written where there is no imagery, so chips see a neutral colour there; such
        pixels stay invalid and become nodata in the output.

    Returns
    -------
    BlockInput
    """
    chip_rows = layout.starts_within(block.row, block.row + block.height, grid.height)
    chip_cols = layout.starts_within(block.col, block.col + block.width, grid.width)
    row_end = max([block.row + block.height] + [r + layout.size for r in chip_rows])
    col_end = max([block.col + block.width] + [c + layout.size for c in chip_cols])
    rows = reflect_index(np.arange(block.row, row_end), grid.height)
    cols = reflect_index(np.arange(block.col, col_end), grid.width)
    r_lo, c_lo = int(rows.min()), int(cols.min())
    window = grid.subgrid(r_lo, c_lo, int(rows.max()) + 1 - r_lo, int(cols.max()) + 1 - c_lo)
    try:
        patch = read_mosaic(sources, window)
    except ImageryReadError as exc:
        raise ImageryReadError(
            f"{str(exc).rstrip('.')} (for output block {block.key}: rows {block.row}-{block.row + block.height - 1}, "
            f"columns {block.col}-{block.col + block.width - 1})."
        ) from exc
    rgb, valid = patch.rgb, patch.valid
    if not (_is_run(rows) and _is_run(cols)):  # chips past the grid's edge see it mirrored
        rgb = rgb[:, rows - r_lo][:, :, cols - c_lo]
        valid = valid[rows - r_lo][:, cols - c_lo]
    if not valid.all():
        rgb[:, ~valid] = fill[:, None]
    return BlockInput(block, rgb, valid, block.row, block.col, chip_rows, chip_cols)


def _is_run(index: np.ndarray) -> bool:
    """Whether indices are consecutive and rising, so that indexing by them is the window itself."""
    return bool(index[-1] - index[0] == len(index) - 1 and (len(index) < 2 or (np.diff(index) == 1).all()))
