"""``canopy export``: a map and its statistics, ready for other tools."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import polygons_options


@click.group()
def export() -> None:
    """Export a canopy height map for other tools."""


@export.command("qgis")
@click.argument("chm", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@polygons_options("Polygons to add with their zonal statistics")
@click.option("--cover-threshold", type=float, default=5.0, show_default=True, help="Height (m) above which a pixel is canopy.")
@click.option("--trees", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A GeoPackage from `canopy trees`: tops sized by height, crowns outlined.")
@click.option("--forest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A GeoPackage from `canopy forest` (its mask .tif beside it): forest filled.")
@click.option("--grid", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A grid from `canopy aggregate`, styled, hidden at first.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the project, the map and the GeoPackages.")
def qgis(chm: Path, polygons: Path | None, layer: str | None, cover_threshold: float, trees: Path | None, forest: Path | None,
         grid: Path | None, out: Path) -> None:
    """Write OUT/<name>.qgs: CHM styled with a legend in metres, POLYGONS with their statistics, labelled, and
    the trees (graduated by biomass when they have it), forest and grid layers, styled; relative paths."""
    from canopy.analysis.qgis_export import export_qgis

    project = export_qgis(chm, out, polygons, layer, cover_threshold, trees=trees, forest=forest, grid=grid)
    for path in sorted(project.parent.iterdir()):
        click.echo(f"wrote {path}", err=True)
