"""Imagery: sources that intersect a region, read onto the output grid."""

from canopy.imagery.geotiff import GeoTiffSource
from canopy.imagery.source import ImagerySource, Patch, open_imagery, read_mosaic

__all__ = ["GeoTiffSource", "ImagerySource", "Patch", "open_imagery", "read_mosaic"]
