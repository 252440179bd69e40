"""Maps derived from canopy height: canopy cover and height classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from canopy.errors import EvaluationError


def cover(chm: xr.DataArray, threshold: float = 5.0) -> xr.DataArray:
    """Canopy cover: 1 where the canopy is taller than ``threshold`` metres, 0 where not, NaN without heights.

    Its mean over an area is the area's canopy cover fraction (``canopy.cover(chm).mean()``).

    Parameters
    ----------
    chm
        Heights in metres (from :func:`canopy.open` or :func:`canopy.predict`); lazy arrays stay lazy.
    threshold
        Height in metres above which a pixel is canopy.

    Returns
    -------
    xarray.DataArray
        float32 ``canopy_cover`` with the map's coordinates and CRS.
    """
    result = xr.where(chm.isnull(), np.nan, (chm > threshold).astype("float32")).astype("float32")
    result = result.rename("canopy_cover").rio.write_crs(chm.rio.crs)
    result.attrs = {"long_name": f"canopy cover (height > {threshold:g} m)", "units": "1", "cover_threshold_m": float(threshold)}
    return result


def height_classes(chm: xr.DataArray, bins: Sequence[float] = (0, 2, 5, 10, 20, 30)) -> xr.DataArray:
    """Heights in classes between ``bins`` (and above the last), as a labelled categorical map.

    Parameters
    ----------
    chm
        Heights in metres.
    bins
        Increasing class edges in metres; a height ``h`` is in class ``i`` when
        ``bins[i] <= h < bins[i + 1]``, and in the last class when ``h >= bins[-1]``. Heights below
        the first edge and pixels without heights are -1.

    Returns
    -------
    xarray.DataArray
        int8 ``height_class`` (class index, -1 for none), with attributes ``flag_values`` and
        ``flag_meanings`` (labels such as ``2-5 m`` and ``30+ m``, the CF convention for
        categories, which netCDF keeps) and ``labels`` (the same, as one string).

    Raises
    ------
    EvaluationError
        If the edges are not increasing.
    """
    edges = np.asarray(bins, np.float64)
    if edges.ndim != 1 or len(edges) < 1 or np.any(np.diff(edges) <= 0):
        raise EvaluationError(f"Height class edges {list(bins)} must be one or more increasing numbers (metres).")
    labels = [f"{lo:g}-{hi:g} m" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]:g}+ m"]
    index = xr.apply_ufunc(lambda h: np.digitize(h, edges) - 1, chm, dask="parallelized", output_dtypes=[np.int64])
    result = xr.where(chm.isnull(), -1, index).astype("int8").rename("height_class").rio.write_crs(chm.rio.crs)
    result.attrs = {
        "long_name": "canopy height class",
        "flag_values": list(range(len(labels))),
        "flag_meanings": " ".join(label.replace(" ", "_") for label in labels),
        "labels": "; ".join(labels),
    }
    return result
