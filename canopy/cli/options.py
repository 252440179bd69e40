"""Command-line options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.choices import Device, Precision
from canopy.predict_options import OPTION


def predict_option(name: str, *declarations: str, **settings):
    """A click option for the predict option ``name``: its flag, help and default from :mod:`canopy.predict_options`,
    the click-only settings (type, metavar, flags) given here."""
    option = OPTION[name]
    settings.setdefault("help", option.help)
    if not settings.get("multiple") and "default" not in settings:
        settings["default"] = option.default
    return click.option(option.flag, *declarations, **settings)


model_option = predict_option("model", metavar="NAME|FILE")
weights_option = predict_option("weights", metavar="PATH|random")
offline_option = predict_option("offline", is_flag=True)
device_option = predict_option("device", type=click.Choice([d.value for d in Device]), show_default=True)
precision_option = predict_option("precision", type=click.Choice([p.value for p in Precision]), show_default=True)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
block_size_option = predict_option("block_size", type=click.IntRange(min=16), show_default=True)
resume_option = predict_option("resume", is_flag=True)


def polygons_options(what: str, required: bool = False):
    """``--polygons`` (what the command does with them: ``what``) and ``--layer``, from any vector file in any CRS."""

    def decorate(command):
        """Add the two options to ``command``."""
        command = click.option("--layer", default=None, help="Layer of a multi-layer vector file of polygons.")(command)
        return click.option("--polygons", type=click.Path(exists=True, path_type=Path), required=required, default=None,
                            help=f"{what} (a GeoPackage, shapefile or GeoJSON, any CRS).")(command)

    return decorate


def point_options(command):
    """``--height-column`` (REFERENCE is points when given), ``--footprint-m`` and ``--statistic``."""
    for option in reversed((
        click.option("--height-column", default=None, help="REFERENCE is a vector file of points (GEDI footprints, field "
                                                            "plots) whose heights (m) are in this column."),
        click.option("--footprint-m", type=float, default=25.0, show_default=True,
                     help="Diameter of the disc each point stands for (25 for GEDI)."),
        click.option("--statistic", default="p98", show_default=True,
                     help="The map's statistic over a footprint: p98 for GEDI RH98, max for a plot's top height, mean, pNN."),
    )):
        command = option(command)
    return command


def point_reference(options: dict):
    """The :class:`~canopy.accuracy.point_references.PointReference` of the point options (removed from them), or None."""
    column, footprint, statistic = (options.pop(name) for name in ("height_column", "footprint_m", "statistic"))
    if column is None:
        return None
    from canopy.accuracy.point_references import PointReference

    return PointReference(column, footprint, statistic)


def engine_options(command):
    """The options of a command on the block engine: ``--block-size``, ``--resume`` and the Dask options."""
    return block_size_option(resume_option(cluster_options(command)))


def cluster_spec(options: dict):
    """The :class:`~canopy.cluster.ClusterSpec` of the Dask options in a command's keyword arguments (removed from them)."""
    from canopy.cluster import ClusterSpec

    return ClusterSpec(*(options.pop(name) for name in ("workers", "threads_per_worker", "scheduler", "scheduler_file")))


def cluster_options(command):
    """The Dask options of a command that computes blocks: ``--workers``, ``--threads-per-worker``, ``--scheduler``, ``--scheduler-file``."""
    for option in reversed((
        predict_option("workers", type=click.IntRange(min=1)),
        predict_option("threads_per_worker", type=click.IntRange(min=1)),
        predict_option("scheduler", metavar="tcp|tls://HOST:PORT"),
        predict_option("scheduler_file", type=click.Path(dir_okay=False)),
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
    from canopy.errors import RequestError
    from canopy.request import read_option_file

    known = sorted(p.name for p in ctx.command.params if p.name and p.name != param.name)
    try:
        values = read_option_file(value, known)
    except RequestError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
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
