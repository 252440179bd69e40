"""TIFF tiles compressed as GDAL writes canopy's rasters; a float32 tile as GDAL writes canopy's maps: floating-point predictor, then DEFLATE.

The predictor (TIFF technical note 3, ``PREDICTOR=3``) splits each row's samples into byte planes,
most significant bytes first, and stores each byte as its difference from the one before it in the
row; smooth heights then compress to about two thirds. The zlib stream is made by libdeflate (the
same library GDAL's DEFLATE uses when it has it), about twice as fast as zlib at the same level and
size; it releases the GIL, so tiles compress in parallel on threads.
"""

from __future__ import annotations

import deflate
import numpy as np

DEFLATE_LEVEL = 6


def encode_tile(tile: np.ndarray, level: int = DEFLATE_LEVEL) -> bytes:
    """The compressed bytes of a (rows, columns) float32 tile, as a TIFF reader expects them for
    Compression=8 (Adobe DEFLATE), Predictor=3 and SampleFormat=3."""
    rows, cols = tile.shape
    planes = np.ascontiguousarray(tile, "<f4").view(np.uint8).reshape(rows, cols, 4)[:, :, ::-1]
    planes = planes.transpose(0, 2, 1).reshape(rows, 4 * cols)
    differences = np.empty_like(planes)
    differences[:, 0] = planes[:, 0]
    np.subtract(planes[:, 1:], planes[:, :-1], out=differences[:, 1:])
    return deflate.zlib_compress(differences.tobytes(), level)


def encode_classes(tile: np.ndarray, level: int = DEFLATE_LEVEL) -> bytes:
    """The compressed bytes of a (rows, columns) uint8 tile for Compression=8 (Adobe DEFLATE) without a predictor."""
    return deflate.zlib_compress(np.ascontiguousarray(tile, np.uint8).tobytes(), level)
