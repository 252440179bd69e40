"""Blocks: output-aligned rectangles of the grid, the unit of memory, progress, resume and distribution."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """Rows ``row .. row + height`` and columns ``col .. col + width`` of the output grid."""

    row: int
    col: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.row < 0 or self.col < 0 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"A block needs a non-negative offset and a positive size, got {self}.")

    @property
    def key(self) -> str:
        """A name unique within a grid, used for the block's file in a partial run."""
        return f"r{self.row}_c{self.col}"


def iter_blocks(height: int, width: int, block_size: int) -> list[Block]:
    """Cut a ``height`` x ``width`` grid into blocks of at most ``block_size`` pixels a side, row by row.

    Parameters
    ----------
    height, width
        The grid's shape in pixels.
    block_size
        The largest side of a block.

    Returns
    -------
    list of Block

    Raises
    ------
    ValueError
        If ``block_size`` is not positive.
    """
    if block_size <= 0:
        raise ValueError(f"block size must be positive, got {block_size}.")
    return [
        Block(row, col, min(block_size, height - row), min(block_size, width - col))
        for row in range(0, height, block_size)
        for col in range(0, width, block_size)
    ]
