"""``canopy stats``: canopy height statistics per polygon of a vector file."""

from __future__ import annotations

from pathlib import Path

import click

_FORMATS = (".gpkg", ".csv", ".parquet")


@click.command()
@click.argument("chm", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--polygons", required=True, type=click.Path(exists=True, path_type=Path), help="Vector file of polygons (GeoPackage, shapefile, GeoJSON, GeoParquet), any CRS.")
@click.option("--layer", default=None, help="Layer of a multi-layer vector file.")
@click.option("--cover-threshold", type=float, default=5.0, show_default=True, help="Height (m) above which a pixel is canopy.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the table: .gpkg, .csv or .parquet (default: print it).")
def stats(chm: Path, polygons: Path, layer: str | None, cover_threshold: float, out: Path | None) -> None:
    """Mean, median, 95th percentile and maximum height, canopy cover, valid and inside fractions and area of each polygon over CHM."""
    from canopy.analysis.zonal import zonal_stats
    from canopy.errors import OutputPathError
    from canopy.io.atomic import atomic_path

    if out is not None and out.suffix.lower() not in _FORMATS:
        raise OutputPathError(f"Output {out} must end in .gpkg, .csv or .parquet.")
    table = zonal_stats(chm, polygons, cover_threshold=cover_threshold, layer=layer)
    if out is None:
        click.echo(table.drop(columns=table.geometry.name).to_string(index=False))
        return
    with atomic_path(out) as tmp:
        tmp.unlink()  # the GeoPackage driver creates its file itself
        suffix = out.suffix.lower()
        if suffix == ".gpkg":
            table.to_file(tmp, driver="GPKG", layer=out.stem)
        elif suffix == ".csv":
            table.assign(**{table.geometry.name: table.geometry.to_wkt()}).to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp)
    click.echo(f"wrote {out} ({len(table)} polygons)", err=True)
