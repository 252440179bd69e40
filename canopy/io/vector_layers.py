"""GeoPackages of several layers written part by part, each layer with its default QGIS style, renamed onto their path when whole."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import geopandas as gpd

from canopy.io.atomic import atomic_path
from canopy.io.qgis_project import store_default_style


def write_layers(
    out: Path,
    parts: Iterable[Mapping[str, gpd.GeoDataFrame]],
    geometry_types: Mapping[str, str],
    styles: Mapping[str, str],
    description: str,
) -> dict[str, int]:
    """Append each part's tables to their layers as they come, so memory holds one part; then store the styles.

    Parameters
    ----------
    out
        The GeoPackage; nothing is there until every part is written.
    parts
        Tables by layer name; every layer must be in the first part (it may be empty, for the schema).
    geometry_types
        Each layer's geometry type (``Point``, ``Polygon``, ...), for layers that stay empty.
    styles
        Each layer's QML, stored as its default style.
    description
        Said of each style in the ``layer_styles`` table.

    Returns
    -------
    dict
        Rows written per layer.
    """
    counts: dict[str, int] = {}
    with atomic_path(out) as tmp:
        tmp.unlink()  # the GeoPackage driver creates its file itself
        for part in parts:
            for name, table in part.items():
                if table.empty and name in counts:
                    continue
                table.to_file(tmp, layer=name, driver="GPKG", append=tmp.exists(), geometry_type=geometry_types[name])
                counts[name] = counts.get(name, 0) + len(table)
        for name, qml in styles.items():
            store_default_style(tmp, name, qml, description)
    return counts
