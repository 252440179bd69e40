"""``canopy aggregate``: per-cell grids of a canopy height map and of its trees (height statistics, cover, gaps, biomass)."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import cluster_spec, engine_options


@click.command()
@click.argument("map_path", metavar="MAP", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--res", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Cell side in metres, a whole multiple of the map's pixel (cells aligned to multiples of it).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The grid (a multi-band COG, .tif).")
@click.option("--trees", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Trees from `canopy trees` (with --allometry for biomass): adds trees_per_ha, top_height, agb, carbon.")
@click.option("--min-valid-fraction", type=float, default=0.5, show_default=True,
              help="Cells with less of their pixels valid are no data.")
@click.option("--shared", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Share of the trees' biomass errors common to all trees of a cell (1: the conservative total).")
@engine_options
def aggregate(map_path: Path, res: float, out: Path, trees: Path | None, min_valid_fraction: float, shared: float,
              block_size: int, resume: bool, **cluster) -> None:
    """Per-cell statistics of MAP on cells of --res metres: mean, p95, max, cover above 2 and 5 m, gap fraction, valid
    fraction, and with --trees tree density, top height, biomass and carbon (Mg/ha) with their standard deviations."""
    from canopy.analysis.aggregate import aggregate as run

    grid = run(map_path, res, out, trees=trees, min_valid_fraction=min_valid_fraction, shared=shared, block_size=block_size,
               cluster=cluster_spec(cluster), resume=resume)
    click.echo(f"wrote {out} ({grid.sizes['x']} x {grid.sizes['y']} cells of {res:g} m; bands {', '.join(grid.data_vars)}; "
               "QGIS styles beside it)", err=True)
