"""``canopy models``: the registry, with what is in the local cache."""

from __future__ import annotations

import json
from pathlib import Path

import click


class _ModelsGroup(click.Group):
    """``canopy models [FILES]`` lists or describes; ``canopy models convert`` is a subcommand beside it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and (args[0] in self.commands or args[0] in ctx.help_option_names):
            return super().parse_args(ctx, args)
        ctx.meta["canopy_models_args"] = list(args)  # no subcommand: list or describe, with the args as given
        return super().parse_args(ctx, [])


@click.group(cls=_ModelsGroup, invoke_without_command=True, context_settings={"ignore_unknown_options": True})
@click.pass_context
def models(ctx: click.Context) -> None:
    """List every model in the registry and whether its weights are cached; `canopy models FILES` describes
    trained model files; `canopy models convert` turns an int8 checkpoint into float safetensors.

    Options: --json prints the list or the descriptions as JSON.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(_list_or_describe, **_parse_listing(ctx.meta.get("canopy_models_args", [])))


def _parse_listing(args: list[str]) -> dict:
    """FILES and --json of `canopy models` without a subcommand."""
    as_json = "--json" in args
    unknown = [a for a in args if a.startswith("-") and a != "--json"]
    if unknown:
        raise click.UsageError(f"No such option: {unknown[0]} (canopy models takes FILES and --json).")
    return {"files": tuple(Path(a) for a in args if a != "--json"), "as_json": as_json}


@models.command("convert")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
def convert(source: Path, target: Path) -> None:
    """Convert an int8 (compressed) checkpoint SOURCE into float32 safetensors TARGET, once.

    Pass TARGET to --weights instead of SOURCE: it runs on any device and in bf16, without
    PyTorch's deprecated quantised tensors. Output maps record that the converted file was used.
    """
    from canopy.models.convert import convert_to_float

    done = convert_to_float(source, target)
    click.echo(
        f"wrote {done.target} ({done.tensors} float32 tensors, {done.layers_dequantized} int8 layers dequantised) "
        f"from {done.source.name} (sha256 {done.source_sha256[:16]}…)"
    )


@click.pass_context
def _list_or_describe(ctx: click.Context, files: tuple[Path, ...], as_json: bool) -> None:
    """List the registry, or describe trained model files."""
    from canopy.cache import cache_dir
    from canopy.models.catalogue import catalogue, describe_model_file

    if files:
        described = [describe_model_file(f).to_dict() for f in files]
        if as_json:
            click.echo(json.dumps(described, indent=2))
            return
        for row in described:
            for key, value in row.items():
                click.echo(f"{key:<20} {value}")
            click.echo("")
        return
    entries = catalogue()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    header = ("model", "patch", "embed", "res (m)", "licence", "cached")
    table = [header] + [
        (e.name, str(e.patch_size), str(e.embed_dim), f"{e.ground_resolution_m:g}", e.licence, "yes" if e.cached else "no")
        for e in entries
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    click.echo(f"\nweights cache: {cache_dir() / 'weights'}")
