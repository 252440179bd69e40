"""Cloud-Optimized GeoTIFF output, compressed while the run streams: no pixel is compressed twice, and
what is left after the last block is the last tiles and laying out the file.

As blocks finish (in any order: a local run's, a Dask run's, or those a resumed run reuses), every
512 x 512 tile of the map whose pixels are all known is compressed on a pool of threads and appended
to a scratch file; its 2 x 2 average feeds the first overview, whose tiles are compressed as soon as
their four children are, and so on up the pyramid. At the end, :mod:`canopy.io.tiff_file` writes
the COG's directories and copies the compressed tiles behind them, in COG order.

Every raster canopy writes goes through here: float32 heights and differences (NaN for no data,
floating-point predictor, overviews that average the valid pixels of each 2 x 2 of the level below,
as GDAL's ``AVERAGE`` does), and uint8 class masks (a no-data value, a palette, overviews that keep
the most frequent valid class of each 2 x 2, as GDAL's ``MODE`` does). Overviews go down to the
first level that fits in one tile, as GDAL's ``OVERVIEWS=AUTO``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from canopy.grid import Block, OutputGrid
from canopy.io.tiff_file import (
    GDAL_METADATA,
    GDAL_NODATA,
    GEO_TAGS,
    LONG,
    SHORT,
    Level,
    packed,
    read_ifd_tags,
    write_cog,
)
from canopy.io.tile_codec import encode_classes, encode_tile

TILE = 512
_BIGTIFF_FROM = 2**32 - 2**26  # bytes of tiles past which the file needs 64-bit offsets (with room for the directories)
# Histogram of heights kept while writing, for the style's range: 0.25 m bins up to 150 m.
_HIST_EDGES = np.arange(0.0, 150.25, 0.25)

ReadBlock = Callable[[Block], np.ndarray]
"""A finished block's values (height, width), of the band's type; a memory map will do."""


@dataclass(frozen=True)
class Band:
    """What a COG's one band holds: float32 metres (NaN no data, averaged overviews) or uint8 classes (``nodata``, a
    palette, overviews of the most frequent class).

    ``colours`` maps a class to its ``#rrggbb`` colour, written as the TIFF's palette.
    """

    description: str
    dtype: str = "float32"
    nodata: float = float("nan")
    colours: dict[int, str] = field(default_factory=dict)

    @property
    def classes(self) -> bool:
        """Whether the band holds classes (uint8) rather than measurements."""
        return self.dtype == "uint8"


HEIGHTS = Band("canopy height (m)")
"""The band of a canopy height map."""
UNCERTAINTY = Band("canopy height uncertainty, one standard deviation (m)")
"""The band of a map's raw uncertainty (``--uncertainty``)."""


def interval_band(side: str, level: float) -> Band:
    """The band of one side (``lower`` or ``upper``) of a map's prediction interval at ``level``."""
    return Band(f"{side} bound of the {level:.0%} prediction interval of canopy height (m)")


def overview_count(width: int, height: int) -> int:
    """Overview levels below the full resolution: halvings until the image fits in one tile."""
    count = 0
    while width > TILE or height > TILE:
        width, height, count = -(-width // 2), -(-height // 2), count + 1
    return count


class StreamingCog:
    """Compresses a map's tiles as the blocks under them finish, then writes the COG around them.

    Parameters
    ----------
    grid
        The output grid.
    blocks
        Every block of the grid (lattice-aligned, row by row).
    block_size
        Their side.
    read
        A finished block's heights.
    scratch
        A folder for the compressed tiles until the file is written (the run's partial folder).
    threads
        Compression threads; default one per core.
    band
        What the band holds; canopy heights by default.
    name
        The scratch file's name, distinct for each COG a run writes at once.
    """

    def __init__(self, grid: OutputGrid, blocks: Iterable[Block], block_size: int, read: ReadBlock, scratch: Path,
                 threads: int | None = None, band: Band = HEIGHTS, name: str = "tiles") -> None:
        self.grid = grid
        self._band = band
        self._read = read
        self._blocks = {b.index(block_size): b for b in blocks}
        self._step = block_size
        self._sizes = [(grid.width, grid.height)]
        for _ in range(overview_count(grid.width, grid.height)):
            w, h = self._sizes[-1]
            self._sizes.append((-(-w // 2), -(-h // 2)))
        self._columns = [-(-w // TILE) for w, _ in self._sizes]
        self._rows = [-(-h // TILE) for _, h in self._sizes]
        self._waiting: list[dict[tuple[int, int], int]] = [{} for _ in self._sizes]  # tile -> children (or blocks) left
        for b in self._blocks.values():
            for tile in self._tiles_under(b):
                self._waiting[0][tile] = self._waiting[0].get(tile, 0) + 1
        for k in range(1, len(self._sizes)):
            for ti in range(self._rows[k - 1]):
                for tj in range(self._columns[k - 1]):
                    parent = (ti // 2, tj // 2)
                    self._waiting[k][parent] = self._waiting[k].get(parent, 0) + 1
        self._quarters: list[dict[tuple[int, int], dict[tuple[int, int], np.ndarray]]] = [{} for _ in self._sizes]
        self._stored: list[dict[int, tuple[int, int]]] = [{} for _ in self._sizes]  # tile index -> (offset, size)
        self.counts = np.zeros(len(_HIST_EDGES) - 1, np.int64)
        self._lock = threading.Lock()
        self._store_path = scratch / f"{name}.bin"
        self._store = open(self._store_path, "wb+")
        self._pool = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="canopy-cog")
        self._futures: list[Future] = []

    def _tiles_under(self, block: Block) -> list[tuple[int, int]]:
        """The full-resolution tiles a block has pixels of."""
        return [(ti, tj) for ti in range(block.row // TILE, (block.row + block.height - 1) // TILE + 1)
                for tj in range(block.col // TILE, (block.col + block.width - 1) // TILE + 1)]

    def block_done(self, block: Block) -> None:
        """Note a finished block; compress, in the background, the tiles it was the last to fill."""
        with self._lock:
            ready = []
            for tile in self._tiles_under(block):
                self._waiting[0][tile] -= 1
                if not self._waiting[0][tile]:
                    ready.append(tile)
        self._futures.extend(self._pool.submit(self._full_resolution_tile, *tile) for tile in ready)
        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]

    def _full_resolution_tile(self, ti: int, tj: int) -> None:
        """Gather a tile's pixels from the blocks under it, count its heights and store it."""
        row0, col0 = ti * TILE, tj * TILE
        height, width = min(TILE, self.grid.height - row0), min(TILE, self.grid.width - col0)
        tile = np.full((TILE, TILE), self._band.nodata, self._band.dtype)
        for bi in range(row0 // self._step, (row0 + height - 1) // self._step + 1):
            for bj in range(col0 // self._step, (col0 + width - 1) // self._step + 1):
                block = self._blocks[bi, bj]
                top, left = max(row0, block.row), max(col0, block.col)
                bottom, right = min(row0 + height, block.row + block.height), min(col0 + width, block.col + block.width)
                data = self._read(block)
                tile[top - row0 : bottom - row0, left - col0 : right - col0] = data[top - block.row : bottom - block.row,
                                                                                    left - block.col : right - block.col]
        if not self._band.classes:
            values = tile[:height, :width]
            values = values[np.isfinite(values)]
            counts = np.bincount(np.floor(np.clip(values, 0, _HIST_EDGES[-1] - 1e-3) * 4).astype(np.int64), minlength=len(self.counts))
            with self._lock:
                self.counts += counts
        self._store_tile(0, ti, tj, tile, height, width)

    def _store_tile(self, k: int, ti: int, tj: int, tile: np.ndarray, height: int, width: int) -> None:
        """Compress a tile of level ``k``, append it to the scratch file, and hand its average to the level above."""
        data = encode_tile(tile) if not self._band.classes else encode_classes(tile)
        with self._lock:
            self._store.seek(0, os.SEEK_END)
            offset = self._store.tell()
            self._store.write(data)
            self._stored[k][ti * self._columns[k] + tj] = (offset, len(data))
        if k + 1 == len(self._sizes):
            return
        parent = (ti // 2, tj // 2)
        quarter = (_mode_2x2(tile[:height, :width], int(self._band.nodata)) if self._band.classes
                   else _average_2x2(tile[:height, :width]))
        with self._lock:
            self._quarters[k + 1].setdefault(parent, {})[ti % 2, tj % 2] = quarter
            self._waiting[k + 1][parent] -= 1
            complete = not self._waiting[k + 1][parent]
            quarters = self._quarters[k + 1].pop(parent) if complete else None
        if quarters is not None:
            up = np.full((TILE, TILE), self._band.nodata, self._band.dtype)
            for (qi, qj), part in quarters.items():
                up[qi * TILE // 2 : qi * TILE // 2 + part.shape[0], qj * TILE // 2 : qj * TILE // 2 + part.shape[1]] = part
            w, h = self._sizes[k + 1]
            self._store_tile(k + 1, *parent, up, min(TILE, h - parent[0] * TILE), min(TILE, w - parent[1] * TILE))

    def finish(self, target: Path, tags: dict[str, str]) -> np.ndarray:
        """Wait for the last tiles and write the COG at ``target``; return the heights' histogram.

        Returns
        -------
        numpy.ndarray
            Counts of valid values in 0.25 m bins from 0 to 150 m (the last bin holds all above),
            for choosing the style's range without reading the output again; zeros for classes.

        Raises
        ------
        RuntimeError
            If a block of the grid never finished (a bug: every block must be reported).
        """
        self._pool.shutdown(wait=True)
        for future in self._futures:
            future.result()
        missing = [k for k, level in enumerate(self._stored) if len(level) != self._rows[k] * self._columns[k]]
        if missing:
            raise RuntimeError(f"The COG's tiles of level {missing[0]} are not all written; a block was never reported done.")
        geo = _georeferencing(self.grid, tags, self._store_path.parent, self._band)
        nodata = geo.pop(GDAL_NODATA)
        classes = self._band.classes
        palette = {320: _palette(self._band.colours)} if classes and self._band.colours else {}
        levels = []
        for k, (width, height) in enumerate(self._sizes):
            fields = {
                254: packed(LONG, [1 if k else 0]),
                256: packed(LONG, [width]),
                257: packed(LONG, [height]),
                258: packed(SHORT, [8 if classes else 32]),
                259: packed(SHORT, [8]),  # Adobe DEFLATE
                262: packed(SHORT, [3 if palette else 1]),  # palette, or black is zero
                277: packed(SHORT, [1]),
                284: packed(SHORT, [1]),
                317: packed(SHORT, [1 if classes else 3]),  # no predictor, or the floating-point one
                322: packed(SHORT, [TILE]),
                323: packed(SHORT, [TILE]),
                339: packed(SHORT, [1 if classes else 3]),  # unsigned integer, or IEEE floating point
                GDAL_NODATA: nodata,
                **palette,
                **({} if k else geo),
            }
            stored = self._stored[k]
            levels.append(Level(fields, [stored[i][1] for i in range(len(stored))]))
        big = sum(sum(level.tile_sizes) for level in levels) > _BIGTIFF_FROM

        def tile_bytes(k: int, i: int) -> bytes:
            offset, size = self._stored[k][i]
            self._store.seek(offset)
            return self._store.read(size)

        with open(target, "wb") as out:
            write_cog(out, levels, tile_bytes, big)
        self.close()
        return self.counts

    def close(self) -> None:
        """Stop compressing and drop the scratch file (after a failure, or once the COG is written)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._store.close()
        self._store_path.unlink(missing_ok=True)

    def __enter__(self) -> StreamingCog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _average_2x2(values: np.ndarray) -> np.ndarray:
    """The mean of the valid pixels of each 2 x 2 (NaN where none is valid), ``ceil(h / 2) x ceil(w / 2)``."""
    height, width = values.shape
    padded = np.full((height + height % 2, width + width % 2), np.nan, np.float32)
    padded[:height, :width] = values
    corners = [padded[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    count = np.zeros(corners[0].shape, np.float32)
    total = np.zeros(corners[0].shape, np.float32)
    for corner in corners:  # in a fixed order, so the sums round the same way every time
        valid = np.isfinite(corner)
        count += valid
        total += np.where(valid, corner, 0.0)
    out = np.full(count.shape, np.nan, np.float32)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _mode_2x2(values: np.ndarray, nodata: int) -> np.ndarray:
    """The most frequent valid class of each 2 x 2 (the first in reading order on a tie; ``nodata`` where none is
    valid), ``ceil(h / 2) x ceil(w / 2)``."""
    height, width = values.shape
    padded = np.full((height + height % 2, width + width % 2), nodata, np.uint8)
    padded[:height, :width] = values
    corners = [padded[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    best = np.full(corners[0].shape, nodata, np.uint8)
    best_count = np.zeros(corners[0].shape, np.int8)
    for corner in corners:
        count = sum(((other == corner) & (other != nodata)).astype(np.int8) for other in corners)
        better = (corner != nodata) & (count > best_count)
        best[better], best_count[better] = corner[better], count[better]
    return best


def _palette(colours: dict[int, str]) -> tuple:
    """The TIFF ColorMap field of 256 entries (16 bits a channel; black where no class is given)."""
    channels = np.zeros((3, 256), np.int64)
    for value, colour in colours.items():
        channels[:, value] = [int(colour[k : k + 2], 16) * 257 for k in (1, 3, 5)]
    return packed(SHORT, channels.ravel().tolist())


def _georeferencing(grid: OutputGrid, tags: dict[str, str], folder: Path, band: Band) -> dict:
    """GeoTIFF's georeferencing fields and GDAL's metadata and nodata fields, as GDAL writes them for this grid."""
    with tempfile.NamedTemporaryFile(suffix=".tif", dir=folder) as tmp:
        with rasterio.open(tmp.name, "w", driver="GTiff", width=1, height=1, count=1, dtype=band.dtype, nodata=band.nodata,
                           crs=grid.crs, transform=grid.transform) as dst:
            dst.update_tags(**tags)
            dst.set_band_description(1, band.description)
            if not band.classes:
                dst.units = ("m",)
        return read_ifd_tags(tmp.name, (*GEO_TAGS, GDAL_METADATA, GDAL_NODATA))


def height_percentile(counts: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100) of heights from :meth:`StreamingCog.finish`'s histogram; 0 when empty."""
    total = counts.sum()
    if total == 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(counts), q / 100.0 * total))
    return float(_HIST_EDGES[min(index + 1, len(_HIST_EDGES) - 1)])
