"""QGIS styles (QML) for canopy's vector layers: tree tops sized by height, crowns outlined, forest filled.

They are stored as each layer's default style in its GeoPackage (:func:`canopy.io.qgis_project.store_default_style`),
so the layers open styled in any QGIS project, and embedded in the projects ``canopy export qgis`` writes.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

TOP_COLOUR = "0,90,40,255"
CROWN_OUTLINE = "255,190,0,255"
FOREST_FILL = "30,120,50,110"
TOP_SIZE = 'scale_linear("height", 0, 60, 1, 5)'
"""Marker diameter (mm) of a tree top: 1 mm for a 0 m tree to 5 mm for one of 60 m or more."""


def _option(name: str, value: str, kind: str = "QString") -> str:
    """One ``Option`` element of a QML property map."""
    return f'<Option name="{name}" type="{kind}" value={quoteattr(value)}/>'


def _qml(body: str) -> str:
    """A style document holding the symbology ``body``."""
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
{body}
</qgis>
"""


def tops_renderer() -> str:
    """The renderer element of tree tops: dark green circles whose size grows with ``height``."""
    return f"""  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">
    <symbols>
      <symbol type="marker" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" locked="0" pass="0">
          <Option type="Map">
            {_option("name", "circle")}
            {_option("color", TOP_COLOUR)}
            {_option("outline_color", "255,255,255,255")}
            {_option("outline_width", "0.2")}
            {_option("size", "2")}
            {_option("size_unit", "MM")}
          </Option>
          <data_defined_properties>
            <Option type="Map">
              {_option("name", "")}
              <Option name="properties" type="Map">
                <Option name="size" type="Map">
                  {_option("active", "true", "bool")}
                  {_option("expression", TOP_SIZE)}
                  {_option("type", "3", "int")}
                </Option>
              </Option>
              {_option("type", "collection")}
            </Option>
          </data_defined_properties>
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>"""


def fill_renderer(fill: str, outline: str, width: str) -> str:
    """A single-symbol polygon renderer element: fill and outline colours (RGBA; a transparent fill draws none), outline width in mm."""
    style = "no" if fill.endswith(",0") else "solid"
    return f"""  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            {_option("color", fill)}
            {_option("style", style)}
            {_option("outline_color", outline)}
            {_option("outline_style", "solid")}
            {_option("outline_width", width)}
            {_option("outline_width_unit", "MM")}
          </Option>
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>"""


def crowns_renderer() -> str:
    """The renderer element of crowns: amber outlines, no fill, so the height map shows through."""
    return fill_renderer("0,0,0,0", CROWN_OUTLINE, "0.4")


def forest_renderer() -> str:
    """The renderer element of forest polygons: a translucent green fill with a dark green edge."""
    return fill_renderer(FOREST_FILL, "0,80,30,255", "0.5")


def tops_qml() -> str:
    """The style document of tree tops."""
    return _qml(tops_renderer())


def crowns_qml() -> str:
    """The style document of crowns."""
    return _qml(crowns_renderer())


def fill_qml(fill: str) -> str:
    """The style document of polygons filled with ``fill`` (RGBA, translucent) and outlined in the same colour, opaque."""
    return _qml(fill_renderer(fill, fill.rsplit(",", 1)[0] + ",255", "0.4"))


def forest_qml() -> str:
    """The style document of forest polygons."""
    return _qml(forest_renderer())
