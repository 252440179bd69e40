"""Command-line options shared by several commands, defined once."""

from __future__ import annotations

import click

from canopy.choices import Device, Precision

model_option = click.option(
    "--model", default=None, metavar="NAME|FILE",
    help="Model from `canopy models`, or a file from `canopy train` (default: meta-chm-v1-huge once its weights are cached)."
)
weights_option = click.option(
    "--weights", default=None, metavar="PATH|random",
    help="Checkpoint (a backbone's, or a whole published model's); 'random' for tests and benchmarks only."
)
offline_option = click.option(
    "--offline", is_flag=True, default=None, help="Never download weights (also CANOPY_OFFLINE=1)."
)
device_option = click.option("--device", type=click.Choice([d.value for d in Device]), default="auto", show_default=True)
precision_option = click.option("--precision", type=click.Choice([p.value for p in Precision]), default="auto", show_default=True)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


def cluster_options(command):
    """The Dask options of a command that computes blocks: ``--workers``, ``--threads-per-worker``, ``--scheduler``, ``--scheduler-file``."""
    for option in reversed((
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Start a local Dask cluster of this many worker processes (each loads a model once)."),
        click.option("--threads-per-worker", type=click.IntRange(min=1), default=None,
                     help="Threads of each local worker  [default: cores / workers]"),
        click.option("--scheduler", default=None, metavar="tcp://HOST:PORT", help="Run on an existing Dask cluster by its scheduler's address."),
        click.option("--scheduler-file", default=None, type=click.Path(dir_okay=False), help="Run on an existing Dask cluster by its scheduler file."),
    )):
        command = option(command)
    return command


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Read a YAML file of option values into the command's defaults; flags given on the command line win.

    Keys are option names (``block_size`` or ``block-size``); an unknown key is an error that
    lists the known ones. Values then go through the same click types as flags do.
    """
    if value is None:
        return None
    import yaml

    try:
        with open(value) as handle:
            data = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}", ctx=ctx, param=param) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values", ctx=ctx, param=param)
    known = {p.name for p in ctx.command.params if p.name and p.name != param.name}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise click.BadParameter(f"{value} has unknown keys {unknown}; known are {sorted(known)}", ctx=ctx, param=param)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


config_option = click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="YAML file of option values (see configs/); flags on the command line override it.",
)
