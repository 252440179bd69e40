"""The FAO forest definition applied to a canopy height array, pixel by pixel: the parts that need only a neighbourhood.

FAO's Forest Resources Assessment defines forest as land spanning more than 0.5 ha with trees
higher than 5 m and a canopy cover of more than 10 %, at least 20 m wide. On a canopy height map:

1. **Canopy**: pixels taller than ``tree_height``.
2. **Land spanned by trees**: the canopy closed with a disc of ``min_width`` diameter, so crowns
   and the openings between crowns narrower than the minimum width are one piece of land, and the
   land ends at the outermost crowns (not in the field beside them).
3. **Cover** is measured in a square of ``min_width`` side centred on each pixel (the share of its
   valid pixels that are canopy), and land is a forest candidate where it exceeds ``min_cover``.
   The unit of evaluation is the minimum width because it is the smallest piece of land the
   definition can call forest; a larger one (say 0.5 ha) would judge a stand's edge by the field
   beside it. Counts come from summed-area tables, in integers, so the result does not depend on
   the block.
4. **Width**: candidates are opened with a disc of ``min_width`` diameter, which removes every part
   narrower than that (hedgerows, lines of street trees).

The area rule (step 5, connected parts of at least ``min_area_ha``; non-forest openings smaller
than that inside forest stay forest, as FAO counts small clearings and roads as forest) needs the
whole map and is in :mod:`canopy.analysis.forest`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from canopy.analysis.morphology import closed, opened


@dataclass(frozen=True)
class ForestDefinition:
    """The thresholds of a forest definition; the defaults are FAO's (FRA 2020 terms and definitions).

    Parameters
    ----------
    min_area_ha
        Forest spans more than this many hectares (FAO: 0.5 ha).
    tree_height
        Trees are taller than this (m; FAO: 5 m).
    min_cover
        Canopy cover is more than this fraction (FAO: 10 %).
    min_width
        Forest is at least this wide (m; FAO: 20 m); also the side of the window cover is measured in.

    .. versionadded:: 0.3
    """

    min_area_ha: float = 0.5
    tree_height: float = 5.0
    min_cover: float = 0.10
    min_width: float = 20.0

    def window(self, res: float) -> int:
        """The cover window's side in pixels: odd, nearest to ``min_width``."""
        return max(1, 2 * int(round(self.min_width / res / 2 - 0.5)) + 1)

    def opening_radius(self, res: float) -> float:
        """The opening disc's radius in pixels."""
        return self.min_width / 2 / res

    def halo(self, res: float) -> int:
        """Pixels a block needs beyond its edges for its candidates to be the whole map's: closing, window and opening."""
        return self.window(res) // 2 + 4 * int(np.ceil(self.opening_radius(res))) + 4


def candidates(heights: np.ndarray, res: float, definition: ForestDefinition) -> np.ndarray:
    """Forest candidates (steps 1-4) of a height window: bool, False where there is no data.

    Only pixels at least :meth:`ForestDefinition.halo` from the window's edges are those of the whole map.
    """
    valid = np.isfinite(heights)
    canopy = valid & (heights > definition.tree_height)
    radius = definition.opening_radius(res)
    land = valid & closed(canopy, radius)
    side = definition.window(res)
    found = land & (_window_sum(canopy, side) > definition.min_cover * _window_sum(valid, side))
    return valid & opened(found, radius)


def _window_sum(mask: np.ndarray, side: int) -> np.ndarray:
    """The count of True pixels in the ``side`` x ``side`` square centred on each pixel (outside counts nothing), exact."""
    half = side // 2
    table = np.zeros((mask.shape[0] + side, mask.shape[1] + side), np.int64)
    table[half + 1 : half + 1 + mask.shape[0], half + 1 : half + 1 + mask.shape[1]] = mask
    table = table.cumsum(0).cumsum(1)
    rows, cols = mask.shape
    return (table[side : side + rows, side : side + cols] - table[:rows, side : side + cols]
            - table[side : side + rows, :cols] + table[:rows, :cols])
