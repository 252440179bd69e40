"""Polygons given by the user (a vector file or a GeoDataFrame), read once and checked, for trees and statistics."""

from __future__ import annotations

import os

import geopandas as gpd

from canopy.errors import EvaluationError


def read_polygons(polygons: str | os.PathLike | gpd.GeoDataFrame, layer: str | None) -> gpd.GeoDataFrame:
    """Polygons (a vector file or a GeoDataFrame) as a GeoDataFrame with a CRS; :class:`EvaluationError` otherwise."""
    if not isinstance(polygons, gpd.GeoDataFrame):
        try:
            polygons = gpd.read_file(polygons, layer=layer)
        except Exception as exc:  # pyogrio and fiona raise their own kinds for unreadable files
            raise EvaluationError(f"Polygons {polygons} cannot be read ({exc}); pass a GeoPackage, shapefile or GeoJSON.") from None
    if polygons.crs is None:
        raise EvaluationError("The polygons have no CRS; set one (e.g. GeoDataFrame.set_crs) so they can be placed on the map.")
    return polygons
