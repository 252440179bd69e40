"""Stand structure per polygon beyond height statistics: gaps, and the trees' count, density, crowns and top height.

Definitions (each also in ``docs/stand_structure.md`` with its source):

- **gap fraction**: the share of a polygon's valid area in canopy gaps, where a gap is a connected
  (8-neighbour) patch of pixels lower than ``gap_height`` (2 m, Brokaw 1982: an opening reaching
  down to 2 m above ground) of at least ``gap_min_area`` (10 m²; smaller openings are crown
  edges, not gaps). A gap is measured whole, also where it reaches past the polygon, within a
  margin around it wide enough that a gap of that area is never cut short.
- **tree count**, **trees per hectare** (over the polygon's valid area) and **mean crown area**,
  from the trees whose tops lie in the polygon (:func:`canopy.trees`).
- **top height**: the mean height of the 100 tallest trees per hectare (the lidar form of the
  forester's top height, e.g. Magnussen 1999), so the ``round(100 x valid ha)`` tallest tops; all
  of them where the polygon holds fewer.
"""

from __future__ import annotations

import numpy as np
import shapely
import xarray as xr
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from canopy.analysis.height_raster import HeightRaster
from canopy.blockwise.parts import large_patches

TOPS_PER_HA = 100


def gap_values(raster: HeightRaster, shape: shapely.Geometry, gap_height: float, gap_min_area: float) -> xr.DataArray:
    """1 where a pixel is in a gap, 0 where it is not, NaN without data, over the window of ``shape``
    plus a margin; a DataArray with the map's CRS, for exactextract to weigh by coverage."""
    res = raster.res
    margin = gap_margin(res, gap_min_area)
    inverse = ~raster.transform
    left, bottom, right, top = shape.bounds
    col0, row0 = (int(np.floor(v)) for v in inverse * (left, top))
    col1, row1 = (int(np.ceil(v)) for v in inverse * (right, bottom))
    row0, col0 = row0 - margin, col0 - margin
    heights = raster.read(row0, col0, row1 + margin - row0, col1 + margin - col0)
    values = gap_mask(heights, res, gap_height, gap_min_area)
    import rioxarray  # noqa: F401  (the .rio accessor)

    transform = window_transform(Window(col0, row0, values.shape[1], values.shape[0]), raster.transform)
    data = xr.DataArray(values, dims=("y", "x"))
    return data.rio.write_crs(raster.crs).rio.write_transform(transform)


def gap_margin(res: float, gap_min_area: float) -> int:
    """Pixels around a window within which a gap of ``gap_min_area`` is seen whole: the thinnest such gap fits inside."""
    return int(np.ceil(max(gap_min_area / res, np.sqrt(gap_min_area)) / res)) + 1


def gap_mask(heights: np.ndarray, res: float, gap_height: float, gap_min_area: float) -> np.ndarray:
    """1 where a pixel is in a gap (a connected patch lower than ``gap_height`` of ``gap_min_area`` or more), 0 where it
    is not, NaN without data (float32)."""
    gaps = large_patches(np.isfinite(heights) & (heights < gap_height), gap_min_area, res * res)
    return np.where(np.isfinite(heights), gaps.astype(np.float32), np.nan)


def tree_columns(heights: np.ndarray, crown_areas: np.ndarray, valid_m2: float) -> dict[str, float]:
    """Tree count, trees per hectare, mean crown area (m²) and top height (m) of the trees in one polygon."""
    valid_ha = valid_m2 / 1e4
    count = len(heights)
    tallest = np.sort(heights)[::-1][: max(1, int(round(TOPS_PER_HA * valid_ha)))]
    return {
        "tree_count": float(count),
        "trees_per_ha": count / valid_ha if valid_ha > 0 else np.nan,
        "crown_area_mean": float(crown_areas.mean()) if count else np.nan,
        "top_height": float(tallest.mean()) if count else np.nan,
    }
