"""``canopy export qgis``: a folder with the map, its style, polygons with their statistics and a QGIS project."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import rasterio

from canopy.errors import OutputPathError
from canopy.io.atomic import atomic_path
from canopy.io.output_lock import output_lock
from canopy.analysis.forest import FOREST_CLASSES
from canopy.io.qgis_project import StyledRaster, VectorLayer, polygon_layer, polygon_qml, store_default_style, write_project
from canopy.io.companions import UNCERTAINTY, existing_companions
from canopy.io.qml import paletted_qml, qml_text, style_range, uncertainty_qml, uncertainty_range, write_qml
from canopy.io.vector_styles import biomass_tops_renderer, crowns_renderer, forest_renderer, tops_renderer
from canopy.analysis.quicklook import read_decimated


def export_qgis(
    chm: str | os.PathLike,
    out_dir: str | os.PathLike,
    polygons: str | os.PathLike | None = None,
    layer: str | None = None,
    cover_threshold: float = 5.0,
    trees: str | os.PathLike | None = None,
    forest: str | os.PathLike | None = None,
    grid: str | os.PathLike | None = None,
) -> Path:
    """Write ``out_dir/<name>.qgs``: the height map styled with its ramp and a legend in metres and,
    with ``polygons``, a GeoPackage of them with their zonal statistics, labelled with mean height;
    with ``trees`` and ``forest``, those layers too, styled. The rasters beside the map
    (``<name>.uncertainty.tif``, ``.lower.tif``, ``.upper.tif``) come along, styled and hidden at first.

    Parameters
    ----------
    chm
        A canopy height map (GeoTIFF); copied into ``out_dir`` with its ``.qml`` style.
    out_dir
        The folder to fill; created if missing (its parent must exist). Every path in the project is
        relative, so the folder can be zipped and sent.
    polygons, layer
        A vector file of polygons (and its layer), in any CRS; None for the map alone.
    cover_threshold
        Height in metres above which a pixel is canopy, for the ``cover`` statistic.
    trees
        A GeoPackage from ``canopy trees``: tops sized by height, crowns outlined.
    forest
        A GeoPackage from ``canopy forest`` (with its mask ``.tif`` beside it): forest filled, the mask by class.
    grid
        A grid from ``canopy aggregate``, styled on its first band (its other bands' styles beside it), hidden at first.

    .. versionchanged:: 0.3
       ``trees`` and ``forest``.
    .. versionchanged:: 0.3.0
       The map's uncertainty and prediction interval; ``grid``; tree tops graduated by biomass when they have it.

    Returns
    -------
    pathlib.Path
        The project file.

    Raises
    ------
    OutputPathError
        If ``out_dir``'s parent does not exist or ``out_dir`` is a file.
    CanopyError
        As :func:`canopy.zonal_stats` for the polygons.
    """
    chm, out_dir = Path(chm), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"Output {out_dir} is a file; give a folder for the QGIS project.")
    if not out_dir.parent.is_dir():
        raise OutputPathError(f"Output folder {out_dir.parent} does not exist; create it first.")
    out_dir.mkdir(exist_ok=True)
    raster, project = out_dir / chm.name, out_dir / f"{chm.stem}.qgs"
    copied = [Path(path) for path in (trees, forest) if path is not None] + ([Path(forest).with_suffix(".tif")] if forest else [])
    copied += list(existing_companions(chm).values()) + ([Path(grid)] if grid is not None else [])
    written = [raster, raster.with_suffix(".qml"), project, *(out_dir / p.name for p in copied)]
    written += [out_dir / p.with_suffix(".qml").name for p in existing_companions(chm).values()]
    if polygons is not None:
        written.append(out_dir / f"{Path(polygons).stem}_stats.gpkg")
    with output_lock(out_dir, written):
        _fill(chm, out_dir, raster, project, polygons, layer, cover_threshold, trees, forest, grid)
    return project


def _fill(chm: Path, out_dir: Path, raster: Path, project: Path, polygons, layer, cover_threshold: float, trees, forest,
          grid) -> None:
    """Write the project's files into ``out_dir``, each atomically, the project file last."""
    from canopy.analysis.zonal import zonal_stats

    if raster.resolve() != chm.resolve():
        with atomic_path(raster) as tmp:
            shutil.copyfile(chm, tmp)
    with rasterio.open(raster) as src:
        crs, bounds = src.crs, tuple(src.bounds)
        sample = read_decimated(src).compressed()
    vmax = style_range(float(np.percentile(sample, 98)) if sample.size else 0.0)
    write_qml(raster.with_suffix(".qml"), vmax)
    vectors: list[VectorLayer] = []
    classes: list[StyledRaster] = [_companion_layer(path, kind, out_dir, vmax) for kind, path in existing_companions(chm).items()]
    if polygons is not None:
        table = zonal_stats(raster, polygons, cover_threshold=cover_threshold, layer=layer).to_crs(crs)
        name = Path(polygons).stem
        gpkg = out_dir / f"{name}_stats.gpkg"
        with atomic_path(gpkg) as tmp:
            tmp.unlink()  # the GeoPackage driver creates its file itself
            table.to_file(tmp, driver="GPKG", layer=name, VERSION="1.2")  # 1.2: read without warnings by older GDAL and QGIS
            store_default_style(tmp, name, polygon_qml())
        geometry = "Polygon" if table.geom_type.str.contains("Polygon").all() else "Unknown"
        vectors.append(polygon_layer(gpkg.name, name, geometry, tuple(table.total_bounds)))
    if trees is not None:
        copied = _copy_into(Path(trees), out_dir)
        biomass = "agb_kg" in _fields(out_dir / copied, "tops")
        vectors += [VectorLayer(copied, "tops", "Point", _bounds(out_dir / copied, "tops", bounds),
                                biomass_tops_renderer() if biomass else tops_renderer()),
                    VectorLayer(copied, "crowns", "Polygon", _bounds(out_dir / copied, "crowns", bounds), crowns_renderer())]
    if forest is not None:
        copied = _copy_into(Path(forest), out_dir)
        mask = _copy_into(Path(forest).with_suffix(".tif"), out_dir)
        vectors.append(VectorLayer(copied, "forest", "Polygon", _bounds(out_dir / copied, "forest", bounds), forest_renderer()))
        classes.insert(0, StyledRaster(mask, "forest / non-forest", paletted_qml(FOREST_CLASSES)))
    if grid is not None:
        style = Path(grid).with_suffix(".qml")
        if not style.is_file():
            raise OutputPathError(f"{style} does not exist; pass a grid written by `canopy aggregate` (its style beside it).")
        classes.append(StyledRaster(_copy_into(Path(grid), out_dir), f"per-cell grid ({Path(grid).stem})", style.read_text(),
                                    shown=False))
        _copy_into(style, out_dir)
    write_project(project, raster.name, crs, bounds, vmax, vectors, classes)


def _companion_layer(path: Path, kind: str, folder: Path, vmax: float) -> StyledRaster:
    """A raster beside the map, copied with its style: the uncertainty on its own ramp, the interval on the heights'."""
    copied = _copy_into(path, folder)
    if kind == UNCERTAINTY:
        with rasterio.open(path) as src:
            sample = read_decimated(src).compressed()
        style = uncertainty_qml(uncertainty_range(float(np.percentile(sample, 98)) if sample.size else 0.0))
        name = "uncertainty, 1 std (m)"
    else:
        style, name = qml_text(vmax), f"{kind} bound of the prediction interval (m)"
    with atomic_path((folder / copied).with_suffix(".qml")) as tmp:
        tmp.write_text(style)
    return StyledRaster(copied, name, style, shown=False)


def _copy_into(path: Path, folder: Path) -> str:
    """Copy a file into the project's folder (atomically, unless it is there already); return its name."""
    if not path.is_file():
        raise OutputPathError(f"{path} does not exist; write it first (canopy trees / canopy forest).")
    target = folder / path.name
    if target.resolve() != path.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
    return path.name


def _fields(gpkg: Path, layer: str) -> list[str]:
    """A layer's field names."""
    import pyogrio

    return list(pyogrio.read_info(gpkg, layer=layer)["fields"])


def _bounds(gpkg: Path, layer: str, fallback: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A layer's extent, or the map's when the layer is empty."""
    import pyogrio

    extent = pyogrio.read_info(gpkg, layer=layer).get("total_bounds")
    return tuple(extent) if extent is not None and np.all(np.isfinite(extent)) else fallback
