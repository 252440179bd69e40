"""Cutting the output grid into blocks (units of work) and chips (model inputs)."""

from canopy.tiling.blocks import Block, iter_blocks
from canopy.tiling.chips import ChipLayout, reflect_index

__all__ = ["Block", "ChipLayout", "iter_blocks", "reflect_index"]
