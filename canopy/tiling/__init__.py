"""Cutting the output grid into chips, the model's inputs, and reading a block's imagery (blocks themselves are the grid's: :class:`canopy.grid.Block`)."""

from canopy.tiling.chips import ChipLayout, reflect_index

__all__ = ["ChipLayout", "reflect_index"]
