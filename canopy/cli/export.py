"""``canopy export``: a map and its statistics, ready for other tools."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Export a canopy height map for other tools."""


@export.command("qgis")
@click.argument("chm", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--polygons", type=click.Path(exists=True, path_type=Path), default=None, help="Polygons to add with their zonal statistics (any CRS).")
@click.option("--layer", default=None, help="Layer of a multi-layer vector file.")
@click.option("--cover-threshold", type=float, default=5.0, show_default=True, help="Height (m) above which a pixel is canopy.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the project, the map and the GeoPackage.")
def qgis(chm: Path, polygons: Path | None, layer: str | None, cover_threshold: float, out: Path) -> None:
    """Write OUT/<name>.qgs: CHM styled with a legend in metres, and POLYGONS with their statistics, labelled; relative paths."""
    from canopy.analysis.qgis_export import export_qgis

    project = export_qgis(chm, out, polygons, layer, cover_threshold)
    for path in sorted(project.parent.iterdir()):
        click.echo(f"wrote {path}", err=True)
