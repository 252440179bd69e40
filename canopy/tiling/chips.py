"""Chips: overlapping square model inputs on one lattice laid over the whole output grid.

The lattice starts at the grid's first pixel and steps by ``size - overlap``, whatever the blocks
are, so a pixel gets the same chips, and so the same prediction, however the grid is cut into
blocks. Chips reaching past the grid edge see the grid mirrored about its edge (reflect padding);
nothing is cropped.

Each chip is computed once: it belongs to the block that holds its origin (its top-left pixel).
Block sides are whole multiples of the lattice's stride, at least the overlap, so a chip reaches
past its own block only into the blocks right of it, below it and diagonally below-right of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChipLayout:
    """Chip side ``size`` (a multiple of ``patch``) and ``overlap`` between neighbours, in pixels."""

    size: int
    overlap: int
    patch: int

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % self.patch:
            raise ValueError(f"chip size {self.size} must be a positive multiple of the patch size {self.patch}.")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"overlap {self.overlap} must be at least 0 and less than the chip size {self.size}.")

    @property
    def stride(self) -> int:
        """Distance between neighbouring chip origins."""
        return self.size - self.overlap

    def starts(self, length: int) -> list[int]:
        """Origins of the chips that tile an axis of ``length`` pixels, the last reaching its end."""
        starts = [0]
        while starts[-1] + self.size < length:
            starts.append(starts[-1] + self.stride)
        return starts

    def starts_touching(self, lo: int, hi: int, length: int) -> list[int]:
        """Origins of the chips of an axis of ``length`` that cover any pixel of ``lo .. hi``."""
        return [s for s in self.starts(length) if s < hi and s + self.size > lo]

    def starts_within(self, lo: int, hi: int, length: int) -> list[int]:
        """Origins of the chips of an axis of ``length`` that lie in ``lo .. hi``: the chips a block owns."""
        return [s for s in self.starts(length) if lo <= s < hi]

    def block_size(self, requested: int) -> int:
        """The block side nearest ``requested`` that puts block edges on the lattice.

        A whole multiple of the stride, so every chip origin falls in exactly one block, and at
        least the overlap, so a chip reaches no further than the next block.
        """
        steps = max(1, round(requested / self.stride), -(-self.overlap // self.stride))
        return steps * self.stride

    def overlap_factor(self) -> float:
        """Chip pixels computed per interior output pixel, ``(size / stride)²``: the least any chipping can do."""
        return (self.size / self.stride) ** 2

    def window(self) -> np.ndarray:
        """The blending weights of one chip (size, size): a raised cosine that never reaches zero.

        Weights fall smoothly towards the chip's edges, so overlapping chips blend without seams,
        but stay positive (at least 1 % of the centre's), so pixels covered by one chip only, at
        the region's outer edge, keep their prediction: no zero border.
        """
        ramp = np.sin(np.pi * (np.arange(self.size) + 0.5) / self.size) ** 2
        ramp = 0.01 + 0.99 * ramp
        return np.outer(ramp, ramp).astype(np.float32)


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Map pixel indices outside ``0 .. length - 1`` into it by mirroring about the edges.

    Index -1 maps to 1 and ``length`` to ``length - 2``, repeating as far as needed: the padding
    depends only on the grid, never on how much of it a block happened to read.
    """
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)
