"""``canopy index``: build or refresh the tile index of a directory of GeoTIFFs."""

from __future__ import annotations

import click


@click.command()
@click.argument("directory")
def index(directory: str) -> None:
    """Index the GeoTIFFs under DIRECTORY (or a glob) and print a summary; later runs rescan only changed files."""
    from canopy.imagery.tile_index import build_index, index_path, summary

    built = build_index(directory)
    click.echo(summary(built))
    click.echo(f"index: {index_path(directory)} ({built.attrs.get('rescanned', 0)} files scanned now)")
