"""Imagery: sources that intersect a region, read onto the output grid.

``source`` declares what a source is, ``geotiff`` reads one raster, ``mosaic`` joins several, and
``discover`` turns what the user names into opened sources.
"""

from canopy.imagery.discover import open_imagery
from canopy.imagery.geotiff import GeoTiffSource, RasterRef
from canopy.imagery.mosaic import read_mosaic
from canopy.imagery.source import ImageryOptions, ImagerySource, MosaicOrder, Patch

__all__ = ["GeoTiffSource", "ImageryOptions", "ImagerySource", "MosaicOrder", "Patch", "RasterRef", "open_imagery", "read_mosaic"]
