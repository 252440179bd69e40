"""A table of polygons written as a GeoPackage, CSV or GeoParquet, chosen by the file's suffix, atomically."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from canopy.errors import OutputPathError
from canopy.io.atomic import atomic_path

FORMATS = (".gpkg", ".csv", ".parquet")


def check_table_path(out: Path) -> None:
    """Refuse, before any work, a table path whose suffix names no format canopy writes."""
    if out.suffix.lower() not in FORMATS:
        raise OutputPathError(f"Output {out} must end in .gpkg, .csv or .parquet.")


def write_table(table: gpd.GeoDataFrame, out: Path) -> None:
    """Write ``table`` to ``out`` (its layer named after the file in a GeoPackage; geometry as WKT in a CSV).

    Raises
    ------
    OutputPathError
        If the suffix is not ``.gpkg``, ``.csv`` or ``.parquet``.
    """
    check_table_path(out)
    with atomic_path(out) as tmp:
        tmp.unlink()  # the GeoPackage driver creates its file itself
        suffix = out.suffix.lower()
        if suffix == ".gpkg":
            table.to_file(tmp, driver="GPKG", layer=out.stem)
        elif suffix == ".csv":
            table.to_wkt().to_csv(tmp, index=False)  # a plain table: WKT in the geometry column is no geometry
        else:
            table.to_parquet(tmp)
