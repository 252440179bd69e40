"""The blocks of a raster grid and, for each, its window with a halo, its inner slices and its affine."""

from __future__ import annotations

from dataclasses import dataclass

from affine import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from canopy.grid import Block, iter_blocks


@dataclass(frozen=True)
class BlockLayout:
    """A ``height`` x ``width`` grid with ``transform`` cut into blocks of ``block_size``, row by row."""

    height: int
    width: int
    transform: Affine
    block_size: int

    @property
    def blocks(self) -> list[Block]:
        """Every block, row by row."""
        return iter_blocks(self.height, self.width, self.block_size)

    def index(self, block: Block) -> tuple[int, int]:
        """The block's (row, column) in the grid of blocks."""
        return block.index(self.block_size)

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns of blocks."""
        return -(-self.height // self.block_size), -(-self.width // self.block_size)

    def block_at(self, i: int, j: int) -> Block | None:
        """The block in row ``i`` and column ``j`` of the grid of blocks; None outside it."""
        rows, cols = self.shape
        if not (0 <= i < rows and 0 <= j < cols):
            return None
        size = self.block_size
        return Block(i * size, j * size, min(size, self.height - i * size), min(size, self.width - j * size))

    def transform_of(self, window: Window) -> Affine:
        """The affine of a window of the grid."""
        return window_transform(window, self.transform)


def read_window(block: Block, halo: int = 0) -> Window:
    """The window a block is read through: the block and ``halo`` pixels around it (it may reach past the grid)."""
    return Window(block.col - halo, block.row - halo, block.width + 2 * halo, block.height + 2 * halo)


def block_window(block: Block) -> Window:
    """The block's own window."""
    return read_window(block, 0)


def inner(block: Block, halo: int) -> tuple[slice, slice]:
    """The block's pixels within an array read through :func:`read_window` with ``halo``."""
    return slice(halo, halo + block.height), slice(halo, halo + block.width)
