"""The ``canopy`` command group: version, debug flag, error and warning reporting."""

from __future__ import annotations

import logging
import sys
import warnings

import click

from canopy._version import __version__
from canopy.errors import CanopyError


class _CanopyGroup(click.Group):
    """Turn a :class:`CanopyError` into one line on stderr and exit status 1, unless ``--debug``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CanopyError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"Error: {exc}", err=True, fg="red")
            ctx.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print warnings as one plain line, without the source location."""
    click.secho(f"Warning: {message}", err=True, fg="yellow")


def _not_from_dask(record: logging.LogRecord) -> bool:
    """Leave out Dask's own log lines (a lost scheduler logs tracebacks); canopy says what happened in one error."""
    return not record.name.startswith("distributed")


@click.group(cls=_CanopyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="canopy (canopy-height)")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Canopy height maps from very-high-resolution RGB imagery."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        warnings.showwarning = _show_warning
        for handler in logging.getLogger().handlers:
            handler.addFilter(_not_from_dask)


def _register_commands() -> None:
    """Attach the subcommands; each lives in a module of its own."""
    from canopy.cli.aggregate import aggregate
    from canopy.cli.calibrate import apply_calibration, calibrate
    from canopy.cli.change import change, evaluate_change
    from canopy.cli.demo import demo
    from canopy.cli.evaluate import evaluate
    from canopy.cli.export import export
    from canopy.cli.forest import forest
    from canopy.cli.index import index
    from canopy.cli.models import models
    from canopy.cli.predict import predict
    from canopy.cli.stats import stats
    from canopy.cli.train import train
    from canopy.cli.trees import evaluate_trees, trees

    for command in (aggregate, apply_calibration, calibrate, change, demo, evaluate, evaluate_change, evaluate_trees, export, forest, index, models, predict, stats, train, trees):
        cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))
