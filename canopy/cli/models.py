"""``canopy models``: the registry, with what is in the local cache."""

from __future__ import annotations

import json
from pathlib import Path

import click

from canopy.models.model_file import read_model_file
from canopy.models.registry import list_models
from canopy.cache import cache_dir
from canopy.models.weights import find_cached


def _describe_file(path: Path) -> dict:
    """The record of a trained model file, as shown by `canopy models FILE`."""
    trained = read_model_file(path)
    spec = trained.spec
    return {
        "name": spec.name,
        "file": str(path),
        "backbone": spec.backbone_name,
        "backbone_weights": trained.backbone_weights,
        "head": spec.head.type,
        "layers": list(spec.head.layers),
        "patch_size": spec.backbone.patch_size,
        "embed_dim": spec.backbone.embed_dim,
        "ground_resolution_m": spec.ground_resolution,
        "chip_size": spec.chip_size,
        "train_images": trained.training.get("train_images"),
        "val_images": trained.training.get("val_images"),
        "best_epoch": trained.training.get("best_epoch"),
        "validation": trained.validation,
    }


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(files: tuple[Path, ...], as_json: bool) -> None:
    """List every model in the registry and whether its weights are cached; with FILES, describe trained model files."""
    if files:
        described = [_describe_file(f) for f in files]
        if as_json:
            click.echo(json.dumps(described, indent=2))
            return
        for row in described:
            for key, value in row.items():
                click.echo(f"{key:<20} {value}")
            click.echo("")
        return
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
