"""Polygons of labelled blocks, dissolved by whole part as soon as a part's last block is done, and empty layers.

A part that crosses block edges is cut into pieces, one per block; the pieces of a part are held
only until the block that holds its last piece (in block order) is done, then dissolved into one
geometry. Memory holds the parts still open, not the map: at most a few rows of blocks' pieces,
plus any one part that spans them all (its geometry is an output row, whole by definition).
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes

# rasterio wraps a mask array in a dataset without a transform and warns of it on every call; set here once, as
# catch_warnings() around the call would not be safe on the engine's threads
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.features")


def polygon_pieces(labels: np.ndarray, transform: Affine, connectivity: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The polygons of a block's labelled parts (0 is outside): each piece's label and geometry."""
    values = labels.astype(np.int32)
    found = [(int(v), shapely.geometry.shape(g)) for g, v in shapes(values, mask=values > 0, connectivity=connectivity,
                                                                     transform=transform)]
    return np.array([v for v, _ in found], np.int64), np.array([g for _, g in found], dtype=object)


class Dissolver:
    """Collects pieces by their whole part's id and dissolves each part once its last piece has come."""

    def __init__(self) -> None:
        self._open: dict[int, list[shapely.Geometry]] = defaultdict(list)

    def add(self, parts: np.ndarray, pieces: np.ndarray) -> None:
        """Keep pieces (geometries) of the given whole parts."""
        for part, piece in zip(parts.tolist(), pieces):
            self._open[part].append(piece)

    def close(self, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dissolve and forget the given parts (those of them that have pieces): their ids and geometries."""
        done = [p for p in parts.tolist() if p in self._open]
        geometries = [shapely.union_all(self._open.pop(p)) if len(self._open[p]) > 1 else self._open.pop(p)[0] for p in done]
        return np.array(done, np.int64), np.array(geometries, dtype=object)

    def __len__(self) -> int:
        return len(self._open)


def empty_layer(columns: dict[str, str], crs) -> gpd.GeoDataFrame:
    """A layer with the given columns (name to dtype) and no row, so an empty output still has its schema."""
    return gpd.GeoDataFrame({c: pd.Series(dtype=t) for c, t in columns.items()}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def concat_layers(tables: list[gpd.GeoDataFrame], crs) -> gpd.GeoDataFrame:
    """Tables of one layer (as :func:`empty_layer` makes the first) as one."""
    return gpd.GeoDataFrame(pd.concat(tables, ignore_index=True), geometry="geometry", crs=crs)
