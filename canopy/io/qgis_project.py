"""A QGIS project (``.qgs``) of a canopy height map, and of polygons with their statistics, that opens finished.

The folder holds everything with relative paths (the map, its ``.qml``, the GeoPackage and the
project), so it can be zipped and sent. The polygons' style is also stored as their default in the
GeoPackage's ``layer_styles`` table, QGIS's convention, so the GeoPackage dragged into any project
is styled too.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from rasterio.crs import CRS

from canopy.io.atomic import atomic_path
from canopy.io.qml import qml_text
from canopy.io.vector_styles import fill_renderer

OUTLINE = "200,30,30,255"
"""Colour of the polygons' outline (RGBA), red over the green ramp."""
_LABEL = escape("format_number(\"height_mean\", 1) || ' m'", {'"': "&quot;"})
"""The polygons' label, mean height in metres with one decimal, as an XML attribute value."""


def polygon_qml() -> str:
    """A QGIS style for polygons: outline only, labelled with their mean height in metres (one decimal)."""
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology|Labeling" labelsEnabled="1">
{_polygon_style()}
</qgis>
"""


def _polygon_style() -> str:
    """The renderer and labeling elements of the polygon style (shared by the ``.qml`` and the project)."""
    return f"""{fill_renderer("0,0,0,0", OUTLINE, "0.6")}
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="{_LABEL}" isExpression="1" fontSize="10" fontSizeUnit="Point" textColor="0,0,0,255" textOpacity="1"/>
      <text-buffer bufferDraw="1" bufferSize="1" bufferSizeUnits="MM" bufferColor="255,255,255,255" bufferOpacity="1"/>
      <placement placement="1" centroidInside="1"/>
      <rendering drawLabels="1" obstacle="0"/>
    </settings>
  </labeling>"""


def store_default_style(gpkg: Path, layer: str, qml: str,
                        description: str = "mean canopy height label, written by canopy export qgis") -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles`` table (QGIS's convention).

    QGIS finds it by table and geometry column name, so the column is read from the GeoPackage itself.
    """
    with sqlite3.connect(gpkg) as db:
        (geometry_column,) = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT, "
            "f_table_schema TEXT, f_table_name TEXT, f_geometry_column TEXT, styleName TEXT, styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT, ui TEXT, update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"
        )
        db.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML, "
            "styleSLD, useAsDefault, description, owner, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', ?)",
            (layer, geometry_column, f"{layer} (canopy)", qml, description,
             datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")),
        )


def _raster_layer(layer_id: str, file: str, name: str, crs: CRS, bounds: tuple[float, float, float, float], pipe: str) -> str:
    """A raster ``maplayer`` element read from ``./file`` with the given ``pipe`` (its style)."""
    return f"""    <maplayer type="raster" hasScaleBasedVisibilityFlag="0" styleCategories="AllStyleCategories">
      {_extent(bounds)}
      <id>{layer_id}</id>
      <datasource>./{escape(file)}</datasource>
      <layername>{escape(name)}</layername>
      <srs>{_srs(crs)}</srs>
      <provider>gdal</provider>
      <pipe>{pipe}</pipe>
      <blendMode>0</blendMode>
    </maplayer>"""


def _tree_entry(layer_id: str, name: str, source: str, provider: str, checked: bool = True) -> str:
    """A ``layer-tree-layer`` element, checked (shown) or not."""
    state = "Qt::Checked" if checked else "Qt::Unchecked"
    return (f'    <layer-tree-layer id="{layer_id}" name={quoteattr(name)} source={quoteattr(source)} providerKey="{provider}" '
            f'checked="{state}" expanded="1"/>')


def _srs(crs: CRS) -> str:
    """A ``spatialrefsys`` element for ``crs``."""
    epsg = crs.to_epsg()
    authid = f"EPSG:{epsg}" if epsg else ""
    return (f"<spatialrefsys><wkt>{escape(crs.to_wkt())}</wkt><proj4>{escape(crs.to_proj4())}</proj4>"
            f"<authid>{authid}</authid><description>{escape(crs.to_string())}</description></spatialrefsys>")


def _extent(bounds: tuple[float, float, float, float]) -> str:
    """An ``extent`` element."""
    left, bottom, right, top = bounds
    return f"<extent><xmin>{left!r}</xmin><ymin>{bottom!r}</ymin><xmax>{right!r}</xmax><ymax>{top!r}</ymax></extent>"


@dataclass(frozen=True)
class VectorLayer:
    """A GeoPackage layer of the project: file name (in the project's folder), layer, geometry type, bounds in the
    project's CRS, its symbology (renderer and labeling elements) and whether it is labelled."""

    gpkg: str
    layer: str
    geometry: str
    bounds: tuple[float, float, float, float]
    symbology: str
    labelled: bool = False


@dataclass(frozen=True)
class StyledRaster:
    """A raster of the project besides the height map (a forest mask, the map's uncertainty): file name, layer name,
    its QML style, and whether it is shown when the project opens (a layer that would hide the heights is not)."""

    file: str
    name: str
    style: str
    shown: bool = True


def polygon_layer(gpkg: str, layer: str, geometry: str, bounds: tuple[float, float, float, float]) -> VectorLayer:
    """Polygons with their statistics, outlined and labelled with mean height."""
    return VectorLayer(gpkg, layer, geometry, bounds, _polygon_style(), labelled=True)


def _layer_id(name: str, source: str) -> str:
    """A layer's id in the project: its name and a digest of its source, so the same export writes the same project."""
    return f"{name}_{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def write_project(
    path: Path,
    raster: str,
    crs: CRS,
    bounds: tuple[float, float, float, float],
    vmax: float,
    vectors: list[VectorLayer] = (),
    classes: list[StyledRaster] = (),
) -> None:
    """Write a QGIS project with the height map, class rasters and vector layers atomically, paths relative to its folder.

    Parameters
    ----------
    path
        The ``.qgs`` file.
    raster
        The height map's file name, in the project's folder.
    crs, bounds
        The map's CRS and (left, bottom, right, top), also the project's CRS and extent.
    vmax
        Top of the colour ramp in metres.
    vectors
        Vector layers, drawn above the rasters in the order given (the first on top).
    classes
        Other rasters (class masks, the map's uncertainty and interval), drawn above the height map, the first on top.
    """
    raster_id = _layer_id("canopy_height", raster)
    pipe = qml_text(vmax).split("<pipe>", 1)[1].split("</pipe>", 1)[0]
    layers = [_raster_layer(raster_id, raster, "canopy height (m)", crs, bounds, pipe)]
    tree = [_tree_entry(raster_id, "canopy height (m)", f"./{raster}", "gdal")]
    for item in reversed(list(classes)):
        layer_id = _layer_id(Path(item.file).stem, item.file)
        style = item.style.split("<pipe>", 1)[1].split("</pipe>", 1)[0]
        layers.insert(0, _raster_layer(layer_id, item.file, item.name, crs, bounds, style))
        tree.insert(0, _tree_entry(layer_id, item.name, f"./{item.file}", "gdal", item.shown))
    for item in reversed(list(vectors)):
        source = f"./{item.gpkg}|layername={item.layer}"
        layer_id = _layer_id(item.layer, source)
        layers.insert(0, f"""    <maplayer type="vector" geometry={quoteattr(item.geometry)} labelsEnabled="{int(item.labelled)}" hasScaleBasedVisibilityFlag="0" styleCategories="AllStyleCategories">
      {_extent(item.bounds)}
      <id>{layer_id}</id>
      <datasource>{escape(source)}</datasource>
      <layername>{escape(item.layer)}</layername>
      <srs>{_srs(crs)}</srs>
      <provider encoding="UTF-8">ogr</provider>
{item.symbology}
      <blendMode>0</blendMode>
    </maplayer>""")
        tree.insert(0, _tree_entry(layer_id, item.layer, source, "ogr"))
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    text = f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis projectname="canopy height" version="3.22.0">
  <homePath path=""/>
  <title>canopy height: {escape(raster)}</title>
  <projectCrs>{_srs(crs)}</projectCrs>
  <layer-tree-group>
{chr(10).join(tree)}
  </layer-tree-group>
  <mapcanvas name="theMapCanvas" annotationsVisible="1">
    <units>meters</units>
    {_extent(bounds)}
    <rotation>0</rotation>
    <destinationsrs>{_srs(crs)}</destinationsrs>
  </mapcanvas>
  <projectlayers>
{chr(10).join(layers)}
  </projectlayers>
  <properties>
    <Paths><Absolute type="bool">false</Absolute></Paths>
    <SpatialRefSys><ProjectionsEnabled type="int">1</ProjectionsEnabled></SpatialRefSys>
  </properties>
  <projectMetadata><title>canopy height: {escape(raster)}</title><creation>{created}</creation></projectMetadata>
</qgis>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
