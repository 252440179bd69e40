"""Connected parts (8-neighbour) of a mask that is labelled block by block and joined across block edges.

Each block's parts are labelled on their own (:func:`scipy.ndimage.label`) where the block is
computed, and summarised (:func:`part_summary`): the parts' pixel counts, a flag per part, sums of
values over them, and the block's four edge rows of labels, a few arrays stored with the block.
Joining pairs the labels that touch across each edge and corner, and a graph's connected components
give every part its whole size, so memory holds edges and counts, not the map.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from canopy.blockwise.layout import BlockLayout
from canopy.blockwise.store import BlockStore

EIGHT = np.ones((3, 3), bool)


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 8-neighbour parts of a block's mask: labels 1..count, 0 outside."""
    return ndimage.label(mask, structure=EIGHT)


def large_patches(mask: np.ndarray, min_area: float, pixel_area: float = 1.0) -> np.ndarray:
    """The pixels of ``mask`` in 8-connected patches of at least ``min_area`` (in the units of ``pixel_area``)."""
    labels, count = label(mask)
    big = np.bincount(labels.ravel(), minlength=count + 1) * pixel_area >= min_area
    big[0] = False
    return big[labels]


def part_summary(labels: np.ndarray, count: int, flags: np.ndarray | None = None, values: np.ndarray | None = None,
                 prefix: str = "parts") -> dict[str, np.ndarray]:
    """What joining needs of a block's parts, as arrays named under ``prefix``: their sizes (pixels), a flag each
    (e.g. touches no-data), sums of ``values`` (k, height, width) over each part's pixels, and the edge labels."""
    flat = labels.ravel()
    summary = {
        "sizes": np.bincount(flat, minlength=count + 1)[1:].astype(np.int64),
        "flags": np.zeros(count, bool) if flags is None else np.asarray(flags, bool),
        "sums": (np.zeros((count, 0)) if values is None else
                 np.stack([np.bincount(flat, weights=v.ravel(), minlength=count + 1)[1:] for v in values], axis=1)),
        "top": labels[0], "bottom": labels[-1], "left": labels[:, 0], "right": labels[:, -1],
    }
    return {f"{prefix}.{name}": np.ascontiguousarray(value) for name, value in summary.items()}


class BlockParts:
    """The parts of a mask over a grid of blocks, added block by block (keyed by their (row, column) in the grid of
    blocks), then joined."""

    def __init__(self) -> None:
        self._order: list[tuple[int, int]] = []
        self._offset: dict[tuple[int, int], int] = {}
        self._sizes: list[np.ndarray] = []
        self._flags: list[np.ndarray] = []
        self._sums: list[np.ndarray] = []
        self._edges: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._total = 0
        self._part = np.zeros(0, np.int64)
        self._part_size = np.zeros(0)
        self._part_flag = np.zeros(0, bool)
        self._part_sums = np.zeros((0, 0))

    def add(self, block: tuple[int, int], summary: dict[str, np.ndarray], prefix: str = "parts") -> None:
        """Keep a block's :func:`part_summary` (blocks are added in the run's block order)."""
        self._order.append(block)
        sizes = summary[f"{prefix}.sizes"]
        self._offset[block] = self._total
        self._sizes.append(sizes)
        self._flags.append(summary[f"{prefix}.flags"])
        self._sums.append(summary[f"{prefix}.sums"])
        self._edges[block] = tuple(summary[f"{prefix}.{side}"] for side in ("top", "bottom", "left", "right"))
        self._total += len(sizes)

    def join(self) -> None:
        """Join the parts that touch across block edges and corners (8 neighbours)."""
        first: list[np.ndarray] = []
        second: list[np.ndarray] = []
        for (i, j), (top, bottom, left, right) in self._edges.items():
            for other, mine, theirs in (((i, j + 1), right, 2), ((i + 1, j), bottom, 0)):
                if other not in self._edges:
                    continue
                edge = self._edges[other][theirs]
                for shift in (-1, 0, 1):
                    a, b = _shifted(mine, edge, shift)
                    both = (a > 0) & (b > 0)
                    first.append(a[both] - 1 + self._offset[i, j])
                    second.append(b[both] - 1 + self._offset[other])
            for other, mine, corner in (((i + 1, j + 1), bottom[-1], 0), ((i + 1, j - 1), bottom[0], -1)):
                theirs = self._edges[other][0][corner] if other in self._edges else 0
                if mine > 0 and theirs > 0:
                    first.append(np.array([mine - 1 + self._offset[i, j]]))
                    second.append(np.array([theirs - 1 + self._offset[other]]))
        a = np.concatenate(first) if first else np.zeros(0, np.int64)
        b = np.concatenate(second) if second else np.zeros(0, np.int64)
        graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(self._total, self._total))
        self._part = connected_components(graph, directed=False)[1] if self._total else np.zeros(0, np.int64)
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        flags = np.concatenate(self._flags) if self._flags else np.zeros(0, bool)
        self._part_size = np.bincount(self._part, weights=sizes, minlength=self._part.max(initial=-1) + 1)
        self._part_flag = np.bincount(self._part, weights=flags, minlength=self._part.max(initial=-1) + 1) > 0
        if self._sums:
            sums = np.concatenate(self._sums)
            self._part_sums = np.zeros((len(self._part_size), sums.shape[1]))
            for k in range(sums.shape[1]):
                self._part_sums[:, k] = np.bincount(self._part, weights=sums[:, k], minlength=len(self._part_size))
        last = np.full(len(self._part_size), -1, np.int64)
        for order, block in enumerate(self._order):
            last[self._part[self._offset[block] + np.arange(len(self._sizes[order]))]] = order
        self._by_last = np.argsort(last, kind="stable")
        self._last_bounds = np.searchsorted(last[self._by_last], np.arange(len(self._order) + 1))
        self._position = {block: k for k, block in enumerate(self._order)}

    def ids(self, block: tuple[int, int], count: int) -> np.ndarray:
        """For each label 0..count of a block: the id of its whole part across blocks (-1 for label 0)."""
        return np.concatenate([[-1], self._part[self._offset[block] + np.arange(count)]])

    def count(self, block: tuple[int, int]) -> int:
        """How many parts a block holds."""
        return len(self._sizes[self._position[block]])

    def closing(self, block: tuple[int, int]) -> np.ndarray:
        """The ids of the whole parts whose last piece, in the order blocks were added, is in ``block``."""
        k = self._position[block]
        return self._by_last[self._last_bounds[k] : self._last_bounds[k + 1]]

    def sizes(self) -> np.ndarray:
        """Each whole part's size in pixels, by part id."""
        return self._part_size

    def sums(self) -> np.ndarray:
        """Each whole part's sums of the ``values`` summarised, (parts, k), by part id."""
        return self._part_sums

    def whole(self, block: tuple[int, int], count: int) -> tuple[np.ndarray, np.ndarray]:
        """For each label 0..count of a block (0 outside): its whole part's size in pixels and whether any piece is flagged."""
        nodes = self._part[self._offset[block] + np.arange(count)]
        return np.concatenate([[0], self._part_size[nodes]]), np.concatenate([[False], self._part_flag[nodes]])


def _shifted(mine: np.ndarray, theirs: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of edge pixels ``mine[k]`` and ``theirs[k + shift]`` that both exist."""
    if shift < 0:
        return mine[-shift:], theirs[:shift]
    if shift > 0:
        return mine[:-shift], theirs[shift:]
    return mine, theirs


def joined_parts(store: BlockStore, layout: BlockLayout, stage: str, prefix: str) -> BlockParts:
    """The parts every block's kernel summarised in ``stage`` under ``prefix`` (:func:`part_summary`), added in block
    order and joined across blocks."""
    parts = BlockParts()
    for block in layout.blocks:
        parts.add(layout.index(block), store.load_all(stage, block, prefix + "."), prefix=prefix)
    parts.join()
    return parts
