"""Mosaics: aligned GeoTIFF tiles joined into one VRT, and several sources read onto one grid by priority."""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np
import rasterio

from canopy.grid import OutputGrid
from canopy.imagery.geotiff import GeoTiffSource
from canopy.imagery.raster_checks import date_span
from canopy.imagery.source import ImagerySource, Patch

_VRT_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
              "float32": "Float32", "float64": "Float64"}


def read_mosaic(sources: list[ImagerySource], grid: OutputGrid) -> Patch:
    """Read all sources onto ``grid``; where several have valid pixels, the earlier one wins.

    Parameters
    ----------
    sources
        In priority order.
    grid
        The window of the output grid to fill.

    Returns
    -------
    Patch
    """
    mosaic: Patch | None = None
    for source in sources:
        patch = source.read(grid)
        if mosaic is None:  # the first source's read is the mosaic so far, without a copy
            mosaic = patch
            continue
        if mosaic.valid.all():
            break
        fill = patch.valid & ~mosaic.valid
        mosaic.rgb[:, fill] = patch.rgb[:, fill]
        mosaic.valid |= fill
    if mosaic is None:
        return Patch(np.zeros((3, grid.height, grid.width), np.float32), np.zeros((grid.height, grid.width), bool))
    return mosaic


def merge_aligned(sources: list[ImagerySource]) -> list[ImagerySource]:
    """Mosaic runs of neighbouring GeoTIFF sources that share CRS, pixel size, data type and alignment
    into one VRT each, so resampling sees across tile edges: a region read from tiles then equals
    the same region read from the image they were cut from. Priority order is kept."""
    merged: list[ImagerySource] = []
    run: list = []

    def flush() -> None:
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            merged.append(_mosaic(run))

    for source in sources:
        if run and isinstance(source, GeoTiffSource) and isinstance(run[0], GeoTiffSource) and _mosaic_key(source) == _mosaic_key(run[0]):
            run.append(source)
            continue
        flush()
        run = [source]
    flush()
    return merged


def _mosaic_key(source: GeoTiffSource) -> tuple:
    """What tiles must share to be mosaicked in one VRT: CRS, pixel size, data type, and pixel alignment."""
    t = source.transform
    return (source.crs.to_wkt(), round(t.a, 12), round(t.e, 12), source.dtype, (t.c / t.a) % 1 // 1e-6, (t.f / t.e) % 1 // 1e-6)


def _vrt_sources(source: GeoTiffSource, anchor: rasterio.Affine, vrt_band: int) -> str:
    """VRT source elements placing a raster's band for ``vrt_band`` (0 = its validity mask) on ``anchor``'s grid."""
    t = source.transform
    x_off, y_off = round((t.c - anchor.c) / anchor.a), round((t.f - anchor.f) / anchor.e)
    path = str(source.path)
    name = f"/vsicurl/{path}" if source.remote and path.startswith("http") else path
    rects = (
        f'<SrcRect xOff="0" yOff="0" xSize="{source.width}" ySize="{source.height}"/>'
        f'<DstRect xOff="{x_off}" yOff="{y_off}" xSize="{source.width}" ySize="{source.height}"/>'
    )
    file = f'<SourceFilename relativeToVRT="0">{escape(name)}</SourceFilename>'
    if vrt_band:
        return f"<SimpleSource>{file}<SourceBand>{source.bands[vrt_band - 1]}</SourceBand>{rects}</SimpleSource>"
    if source.nodata_rule == "data":  # nodata read as data: valid wherever the raster is
        return f"<ComplexSource>{file}<SourceBand>1</SourceBand>{rects}<ScaleOffset>255</ScaleOffset><ScaleRatio>0</ScaleRatio></ComplexSource>"
    return f"<SimpleSource>{file}<SourceBand>mask,1</SourceBand>{rects}</SimpleSource>"


def _mosaic(members: list[GeoTiffSource]) -> GeoTiffSource:
    """One source over a VRT of aligned members; the first member wins where they overlap."""
    first = members[0].transform
    left = min(m.bounds[0] for m in members)
    top = max(m.bounds[3] for m in members)
    anchor = rasterio.Affine(first.a, 0, first.c + round((left - first.c) / first.a) * first.a,
                             0, first.e, first.f + round((top - first.f) / first.e) * first.e)
    width = round((max(m.bounds[2] for m in members) - anchor.c) / anchor.a)
    height = round((min(m.bounds[1] for m in members) - anchor.f) / anchor.e)
    dtype = _VRT_TYPES[members[0].dtype]
    ordered = list(reversed(members))  # in a VRT the last source wins
    bands = "".join(
        f'<VRTRasterBand dataType="{dtype}" band="{b}">' + "".join(_vrt_sources(m, anchor, b) for m in ordered) + "</VRTRasterBand>"
        for b in (1, 2, 3)
    )
    mask = '<MaskBand><VRTRasterBand dataType="Byte">' + "".join(_vrt_sources(m, anchor, 0) for m in ordered) + "</VRTRasterBand></MaskBand>"
    xml = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{escape(members[0].crs.to_wkt())}</SRS>'
        f"<GeoTransform>{anchor.c!r},{anchor.a!r},0,{anchor.f!r},0,{anchor.e!r}</GeoTransform>{bands}{mask}</VRTDataset>"
    )
    names = f"mosaic of {len(members)} tiles ({members[0].name}, ...)"
    mosaic = GeoTiffSource.mosaic(xml, names, max(m.date for m in members), members, date_span([m.taken for m in members]))
    for member in members:
        member.close()
    return mosaic
