"""``canopy stats``: canopy height statistics and stand structure per polygon of a vector file."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.choices import STRUCTURE
from canopy.cli.options import cluster_options, cluster_spec, polygons_options


def _names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """A comma-separated list of statistic names."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


@click.command()
@click.argument("chm", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@polygons_options("The polygons to describe", required=True)
@click.option("--stats", "names", default="mean,median,p95,max,cover", show_default=True, callback=_names,
              help=f"Comma-separated: mean, median, max, p1..p99, cover, {', '.join(STRUCTURE)} "
                   f"(or 'structure' for these {len(STRUCTURE)}); agb, carbon (totals with 90 % intervals, per ha) "
                   "from --trees made with --allometry.")
@click.option("--cover-threshold", type=float, multiple=True, default=(5.0,), show_default=True,
              help="Height (m) above which a pixel is canopy; repeat for several (columns cover_<t>m).")
@click.option("--gap-height", type=float, default=2.0, show_default=True, help="Gaps are lower than this (m) ...")
@click.option("--gap-min-area", type=float, default=10.0, show_default=True, help="... and at least this large (m²).")
@click.option("--trees", "trees_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The map's trees from `canopy trees`, for the tree statistics  [default: found here]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the table: .gpkg, .csv or .parquet (default: print it).")
@cluster_options
def stats(chm: Path, polygons: Path, layer: str | None, names: tuple[str, ...], cover_threshold: tuple[float, ...],
          gap_height: float, gap_min_area: float, trees_file: Path | None, out: Path | None, **cluster) -> None:
    """Height statistics, canopy cover and stand structure (gaps, trees, top height) of each polygon over CHM,
    every pixel weighted by its area inside; plus valid and inside fractions and area. The trees and the forest
    mask that the tree statistics and forest_fraction need run on the block engine, on Dask with the cluster options."""
    from canopy.analysis.zonal import zonal_stats
    from canopy.io.tables import check_table_path, write_table

    if out is not None:
        check_table_path(out)
    table = zonal_stats(chm, polygons, stats=names, cover_threshold=cover_threshold if len(cover_threshold) > 1 else cover_threshold[0],
                        layer=layer, gap_height=gap_height, gap_min_area=gap_min_area, trees=trees_file,
                        cluster=cluster_spec(cluster))
    if out is None:
        click.echo(table.drop(columns=table.geometry.name).to_string(index=False))
        return
    write_table(table, out)
    click.echo(f"wrote {out} ({len(table)} polygons)", err=True)
