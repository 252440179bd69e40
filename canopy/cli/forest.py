"""``canopy forest``: forest / non-forest under the FAO definition (or a national one), as a mask and polygons."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from canopy.analysis.forest_rule import ForestDefinition
from canopy.cli.options import cluster_spec, engine_options
from canopy.cli.trees import documented_options


@click.command()
@click.argument("chm", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="GeoPackage of forest polygons (layer forest); the mask goes beside it as <name>.tif with a QGIS style.")
@documented_options(ForestDefinition)
@engine_options
def forest(chm: Path, out: Path, block_size: int, resume: bool, **thresholds) -> None:
    """Map forest and non-forest in a canopy height map CHM: land of more than 0.5 ha with trees over 5 m
    covering more than 10 %, at least 20 m wide (FAO), every threshold adjustable."""
    from canopy.analysis.forest import forest as run_forest

    cluster = cluster_spec(thresholds)
    definition = ForestDefinition(**{f.name: thresholds[f.name] for f in fields(ForestDefinition)})
    result = run_forest(chm, out, definition=definition, block_size=block_size, cluster=cluster, resume=resume)
    click.echo(f"wrote {out} ({result.polygon_count} forest polygons, {result.forest_area_ha:.2f} ha, "
               f"{result.forest_fraction:.1%} of the mapped area) and {out.with_suffix('.tif')} (mask, QGIS style beside it)", err=True)
