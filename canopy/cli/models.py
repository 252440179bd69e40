"""``canopy models``: the registry, with what is in the local cache."""

from __future__ import annotations

import json

import click

from canopy.models.registry import list_models
from canopy.models.weights import cache_dir, find_cached


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json: bool) -> None:
    """List every model in the registry and whether its weights are cached."""
    rows = []
    for spec in list_models():
        cached = find_cached(spec)
        rows.append(
            {
                "name": spec.name,
                "patch_size": spec.backbone.patch_size,
                "embed_dim": spec.backbone.embed_dim,
                "ground_resolution_m": spec.ground_resolution,
                "licence": spec.licence,
                "cached": cached is not None,
                "weights_path": str(cached) if cached else None,
                "description": spec.description,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("model", "patch", "embed", "res (m)", "licence", "cached")
    table = [header] + [
        (r["name"], str(r["patch_size"]), str(r["embed_dim"]), f"{r['ground_resolution_m']:g}", r["licence"],
         "yes" if r["cached"] else "no")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"\nweights cache: {cache_dir() / 'weights'}")
