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


BIOMASS_BREAKS = (0.0, 100.0, 500.0, 1500.0, 4000.0, 1e6)
"""Classes of a tree's aboveground biomass (kg): fixed, so maps of different places read alike."""
BIOMASS_COLOURS = ("255,255,204,255", "254,217,142,255", "254,153,41,255", "217,95,14,255", "153,52,4,255")
"""Tree tops by biomass, from light (little) to dark brown (much), one per class."""


def tops_renderer() -> str:
    """The renderer element of tree tops: dark green circles whose size grows with ``height``."""
    return f"""  <renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">
    <symbols>
{_top_symbol("0", TOP_COLOUR)}
    </symbols>
  </renderer-v2>"""


def biomass_tops_renderer(breaks: tuple[float, ...] = BIOMASS_BREAKS) -> str:
    """The renderer element of tree tops graduated by ``agb_kg``: one colour per class between consecutive ``breaks``
    (kg; the last class open above), circles sized by height as :func:`tops_renderer`'s."""
    labels = [f"{low:,.0f} - {high:,.0f} kg" for low, high in zip(breaks, breaks[1:-1])] + [f"over {breaks[-2]:,.0f} kg"]
    ranges = "\n".join(f'      <range lower="{low:g}" upper="{high:g}" symbol="{k}" label={quoteattr(label)} render="true"/>'
                       for k, (low, high, label) in enumerate(zip(breaks, breaks[1:], labels)))
    symbols = "\n".join(_top_symbol(str(k), BIOMASS_COLOURS[k % len(BIOMASS_COLOURS)]) for k in range(len(breaks) - 1))
    return f"""  <renderer-v2 type="graduatedSymbol" attr="agb_kg" graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" forceraster="0">
    <ranges>
{ranges}
    </ranges>
    <symbols>
{symbols}
    </symbols>
    <classificationMethod id="Quantile"/>
  </renderer-v2>"""


def _top_symbol(name: str, colour: str) -> str:
    """A tree top's marker symbol: a circle of ``colour`` sized by height."""
    return f"""      <symbol type="marker" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" locked="0" pass="0">
          <Option type="Map">
            {_option("name", "circle")}
            {_option("color", colour)}
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
      </symbol>"""


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


def tops_qml(biomass: bool = False) -> str:
    """The style document of tree tops; graduated by biomass (:data:`BIOMASS_BREAKS`) when they have it."""
    return _qml(biomass_tops_renderer() if biomass else tops_renderer())


def crowns_qml() -> str:
    """The style document of crowns."""
    return _qml(crowns_renderer())


def fill_qml(fill: str) -> str:
    """The style document of polygons filled with ``fill`` (RGBA, translucent) and outlined in the same colour, opaque."""
    return _qml(fill_renderer(fill, fill.rsplit(",", 1)[0] + ",255", "0.4"))


def forest_qml() -> str:
    """The style document of forest polygons."""
    return _qml(forest_renderer())
