"""The TIFF container of a Cloud-Optimized GeoTIFF, written around tiles that are already compressed.

A COG is a tiled TIFF whose image file directories (full resolution, then each overview) all come
before the tile data, and whose tile data run from the smallest overview to the full resolution,
each level row by row. GDAL's COG driver can only make one by compressing every tile at the end;
here the tiles are compressed while the run streams, and this module lays out the file around them.

The georeferencing tags (GeoKeys, tie point, pixel scale) and GDAL's metadata and nodata tags are
not composed here: they are copied from a one-pixel GeoTIFF that GDAL writes with the same CRS,
transform and metadata (:func:`read_ifd_tags`), so every CRS GDAL can encode is encoded as GDAL does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

# TIFF field types: (struct code, size in bytes)
_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 12: ("d", 8), 16: ("Q", 8)}
SHORT, LONG, LONG8 = 3, 4, 16

GEO_TAGS = (33550, 33922, 34735, 34736, 34737)
"""ModelPixelScale, ModelTiepoint, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams."""
GDAL_METADATA, GDAL_NODATA = 42112, 42113

Tag = tuple[int, int, bytes]
"""A raw field: TIFF type, count, and its values as little-endian bytes."""


def read_ifd_tags(path: str, wanted: Sequence[int]) -> dict[int, Tag]:
    """The raw fields ``wanted`` of the first image file directory of a little-endian TIFF or BigTIFF.

    Raises
    ------
    ValueError
        If the file is not a little-endian TIFF.
    """
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] != b"II":
            raise ValueError(f"{path} is not a little-endian TIFF.")
        big = struct.unpack_from("<H", head, 2)[0] == 43
        count_fmt, entry_size, offset_fmt = ("<Q", 20, "<Q") if big else ("<H", 12, "<I")
        f.seek(struct.unpack_from("<Q", head, 8)[0] if big else struct.unpack_from("<I", head, 4)[0])
        count = struct.unpack(count_fmt, f.read(struct.calcsize(count_fmt)))[0]
        entries = f.read(count * entry_size)
        found: dict[int, Tag] = {}
        for i in range(count):
            entry = entries[i * entry_size : (i + 1) * entry_size]
            tag, kind = struct.unpack_from("<HH", entry)
            if tag not in wanted:
                continue
            n = struct.unpack_from("<Q" if big else "<I", entry, 4)[0]
            size = _TYPES[kind][1] * n
            inline = entry[12:] if big else entry[8:]
            if size <= len(inline):
                data = inline[:size]
            else:
                f.seek(struct.unpack_from(offset_fmt, inline)[0])
                data = f.read(size)
            found[tag] = (kind, n, data)
        return found


def packed(kind: int, values: Sequence) -> Tag:
    """A field of ``kind`` holding ``values`` (a str for ASCII)."""
    if kind == 2:
        data = values.encode("ascii") + b"\0"
        return kind, len(data), data
    return kind, len(values), struct.pack(f"<{len(values)}{_TYPES[kind][0]}", *values)


@dataclass
class Level:
    """One image of the COG: its own fields (its size among them) and its tiles' sizes in row-major order."""

    fields: dict[int, Tag]
    tile_sizes: list[int]


LEADER, TRAILER = 4, 4
"""Bytes before each tile (its size, uint32) and after it (its last four bytes again), as GDAL's COG driver writes
them: a reader over HTTP learns a tile's size from its leader and skips the byte-count array, and a trailer that
matches tells that the tile was not altered since."""


def write_cog(out: BinaryIO, levels: Sequence[Level], tile_bytes: Callable[[int, int], bytes], big: bool) -> None:
    """Write the whole file: header, the levels' directories, then every tile, smallest level first.

    Parameters
    ----------
    out
        A file opened for writing, at its start.
    levels
        Full resolution first, then the overviews from finest to coarsest. The tile offsets and byte
        counts are filled in here.
    tile_bytes
        The compressed bytes of tile ``i`` (row-major) of level ``k``: ``tile_bytes(k, i)``; at least four.
    big
        BigTIFF (64-bit offsets), for files of 4 GB or more.
    """
    ghost = _ghost_header()
    header_size = 16 if big else 8
    offset_kind = LONG8 if big else LONG
    # directories laid out with placeholder offsets first, to learn where the data begins
    for level in levels:
        level.fields[324] = packed(offset_kind, [0] * len(level.tile_sizes))
        level.fields[325] = packed(offset_kind, level.tile_sizes)
    sizes = [len(_ifd_bytes(level.fields, 0, 0, big)) for level in levels]  # offsets do not change a directory's size
    data_start = header_size + len(ghost) + sum(sizes)
    offsets: list[list[int]] = [[] for _ in levels]
    position = data_start
    for k in reversed(range(len(levels))):
        for size in levels[k].tile_sizes:
            offsets[k].append(position + LEADER)
            position += LEADER + size + TRAILER
    ifd_at = header_size + len(ghost)
    out.write(struct.pack("<2sHHHQ", b"II", 43, 8, 0, ifd_at) if big else struct.pack("<2sHI", b"II", 42, ifd_at))
    out.write(ghost)
    for k, level in enumerate(levels):
        level.fields[324] = packed(offset_kind, offsets[k])
        next_at = ifd_at + sizes[k] if k + 1 < len(levels) else 0
        out.write(_ifd_bytes(level.fields, ifd_at, next_at, big))
        ifd_at += sizes[k]
    for k in reversed(range(len(levels))):
        for i in range(len(levels[k].tile_sizes)):
            data = tile_bytes(k, i)
            out.write(struct.pack("<I", len(data)) + data + data[-TRAILER:])


def _ghost_header() -> bytes:
    """GDAL's structural metadata for a COG: directories before data, tiles row by row, each with its leader and trailer.

    GDAL reports ``LAYOUT=COG`` (in the ``IMAGE_STRUCTURE`` metadata, how users and validators tell a COG) only
    when all four keys are there."""
    body = ("LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
            "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n ")
    return f"GDAL_STRUCTURAL_METADATA_SIZE={len(body):06d} bytes\n{body}".encode("ascii")


def _ifd_bytes(fields: dict[int, Tag], at: int, next_at: int, big: bool) -> bytes:
    """A directory written at offset ``at``, entries sorted by tag, large values after the entries."""
    inline = 8 if big else 4
    entries, extra = [], b""
    extra_at = at + ((8 + 20 * len(fields) + 8) if big else (2 + 12 * len(fields) + 4))
    for tag in sorted(fields):
        kind, count, data = fields[tag]
        if len(data) <= inline:
            value = data.ljust(inline, b"\0")
        else:
            value = struct.pack("<Q" if big else "<I", extra_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
        entries.append(struct.pack("<HHQ", tag, kind, count) + value if big else struct.pack("<HHI", tag, kind, count) + value)
    head = struct.pack("<Q", len(fields)) if big else struct.pack("<H", len(fields))
    tail = struct.pack("<Q", next_at) if big else struct.pack("<I", next_at)
    return head + b"".join(entries) + tail + extra
