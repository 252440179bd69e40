"""A QGIS style sidecar (``<name>.qml``): a height colour ramp in metres, with a legend whose labels end in `` m``."""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import quoteattr

from canopy.io.atomic import atomic_path

# Sequential ramp from bare ground to tall canopy, as (fraction of the range, hex colour).
HEIGHT_COLOURS: list[tuple[float, str]] = [
    (0.0, "#f7f4e9"),
    (0.1, "#d9ef8b"),
    (0.3, "#91cf60"),
    (0.5, "#1a9850"),
    (0.75, "#006837"),
    (1.0, "#00331a"),
]


def style_range(p98: float) -> float:
    """Top of the colour ramp: the 98th percentile of heights rounded up to 5 m, at least 5 m."""
    return max(5.0, 5.0 * math.ceil(p98 / 5.0))


def uncertainty_range(p98: float) -> float:
    """Top of an uncertainty's colour ramp: its 98th percentile rounded up to 1, 2 or 5 times a power of ten, at least 0.1 m."""
    top = max(p98, 0.1)
    power = 10.0 ** math.floor(math.log10(top))
    return next(step * power for step in (1.0, 2.0, 5.0, 10.0) if step * power >= top - 1e-9)


CHANGE_COLOURS: list[tuple[float, str]] = [
    (0.0, "#8c510a"),
    (0.3, "#d8b365"),
    (0.5, "#f5f5f5"),
    (0.7, "#5ab4ac"),
    (1.0, "#01665e"),
]
"""Diverging ramp for height change, from loss (brown) through no change (white) to gain (teal)."""


UNCERTAINTY_COLOURS: list[tuple[float, str]] = [
    (0.0, "#fcfdbf"),
    (0.25, "#feb078"),
    (0.5, "#f1605d"),
    (0.75, "#b5367a"),
    (1.0, "#3b0f70"),
]
"""Sequential ramp for a height's uncertainty, from sure (pale yellow) to unsure (dark purple): unlike the heights' greens."""


def qml_text(vmax: float) -> str:
    """The style document for heights from 0 to ``vmax`` metres."""
    return _ramp_style(0.0, vmax, HEIGHT_COLOURS)


def change_qml(vmax: float) -> str:
    """The style document for height change from ``-vmax`` to ``+vmax`` metres, white at no change."""
    return _ramp_style(-vmax, vmax, CHANGE_COLOURS)


def band_qml(vmax: float, unit: str, band: int) -> str:
    """The style document of one band of a grid (:func:`canopy.aggregate`): the height ramp from 0 to ``vmax``, labels
    in ``unit`` (``m``, ``Mg/ha``, or none for fractions)."""
    return _ramp_style(0.0, vmax, HEIGHT_COLOURS, f" {unit}" if unit and unit != "fraction" else "", band)


def _ramp_style(vmin: float, vmax: float, colours: list[tuple[float, str]], suffix: str = " m", band: int = 1) -> str:
    """A pseudocolour style of ``band`` interpolating ``colours`` (fraction of the range, hex) from ``vmin`` to ``vmax``,
    labels ending in ``suffix`` (metres by default)."""
    values = [vmin + f * (vmax - vmin) for f, _ in colours]
    items = "\n".join(
        f"            <item alpha=\"255\" value=\"{v:g}\" label={quoteattr(f'{v:g}{suffix}')} color=\"{colour}\"/>"
        for v, (_, colour) in zip(values, colours)
    )
    return _raster_style(f"""    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" nodataColor="" classificationMin="{vmin:g}" classificationMax="{vmax:g}">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="2" clip="0" minimumValue="{vmin:g}" maximumValue="{vmax:g}" labelPrecision="0">
{items}
          <rampLegendSettings minimumLabel="" maximumLabel="" prefix="" suffix="{suffix}" orientation="2" direction="0" useContinuousLegend="1">
            <numericFormat id="basic">
              <Option type="Map">
                <Option name="decimals" type="int" value="1"/>
                <Option name="rounding_type" type="int" value="0"/>
                <Option name="show_plus" type="bool" value="false"/>
                <Option name="show_thousand_separator" type="bool" value="false"/>
                <Option name="show_trailing_zeros" type="bool" value="false"/>
              </Option>
            </numericFormat>
          </rampLegendSettings>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>""")


def _raster_style(renderer: str) -> str:
    """A raster style document whose pipe holds ``renderer`` (and the provider element before it, if any)."""
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="Symbology">
  <pipe>
{renderer}
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def uncertainty_qml(vmax: float) -> str:
    """The style document for a height's uncertainty (a standard deviation) from 0 to ``vmax`` metres."""
    return _ramp_style(0.0, vmax, UNCERTAINTY_COLOURS)


def write_qml(path: Path, vmax: float, style=qml_text) -> None:
    """Write the style atomically to ``path``.

    Parameters
    ----------
    path
        Normally ``<name>.qml`` beside ``<name>.tif``, where QGIS finds it by itself.
    vmax
        Value in metres at the top of the colour ramp.
    style
        The style document for a ramp up to ``vmax``: heights (default) or :func:`uncertainty_qml`.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(style(vmax))


def paletted_qml(classes: list[tuple[int, str, str]]) -> str:
    """The style document of a class raster: one (value, hex colour, label) per class, shown in the legend by label."""
    entries = "\n".join(f"        <paletteEntry value=\"{value}\" color=\"{colour}\" alpha=\"255\" label={quoteattr(label)}/>"
                        for value, colour, label in classes)
    return _raster_style(f"""    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>""")
