"""Command-line options shared by several commands, defined once."""

from __future__ import annotations

import click

from canopy.runtime.device import DEVICES, PRECISIONS

model_option = click.option(
    "--model", default=None, metavar="NAME", help="Model name from `canopy models` (default: dinov2_vits14)."
)
weights_option = click.option(
    "--weights", default=None, metavar="PATH|random", help="Backbone checkpoint; 'random' for tests and benchmarks only."
)
offline_option = click.option(
    "--offline", is_flag=True, default=None, help="Never download weights (also CANOPY_OFFLINE=1)."
)
device_option = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
