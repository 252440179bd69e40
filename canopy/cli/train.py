"""``canopy train``: fit a height head on lidar canopy height."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import config_option, device_option, offline_option, quiet_option, weights_option
from canopy.cli.progress import download_progress


@click.command()
@config_option
@click.option("--imagery", multiple=True, required=True, metavar="SRC", help="RGB GeoTIFF; repeat, paired in order with --reference.")
@click.option("--reference", multiple=True, required=True, metavar="CHM", help="Canopy height (m) over the matching --imagery.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Model file to write (.safetensors).")
@click.option("--backbone", default="dinov2_vits14", show_default=True, help="DINOv2 or DINOv3 backbone from `canopy models` (dinov3_vitl16_sat for satellite imagery).")
@weights_option
@click.option("--head", type=click.Choice(["dpt", "linear"]), default="dpt", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Share of whole images held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chip-size", type=int, default=None, help="Chip side in px (default: the backbone's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@device_option
@offline_option
@quiet_option
def train(imagery, reference, out, backbone, weights, head, epochs, val_fraction, seed, chip_size, batch_size, device, offline, quiet) -> None:
    """Train a height head on imagery paired with reference canopy height; the backbone stays frozen."""

    from canopy.training import TrainSettings, train as run_train

    def report(r) -> None:
        if not quiet:
            val = "n/a" if r.val_mae is None else f"{r.val_mae:.3f} m"
            click.echo(f"epoch {r.epoch}/{r.epochs}  loss {r.train_loss:.3f} m  val MAE {val}", err=True)

    with download_progress(quiet) as on_download:
        settings = TrainSettings(head, epochs, val_fraction, seed, chip_size, batch_size)
        result = run_train(
            list(imagery), list(reference), out, backbone=backbone, weights=weights, settings=settings, device=device,
            offline=offline, progress=report, download_progress=on_download,
        )
    validation = result.validation
    summary = f"best epoch {result.best_epoch}"
    if validation:
        summary += f", validation MAE {validation.mae:.3f} m, bias {validation.bias:+.3f} m"
    click.echo(f"wrote {out} ({summary})", err=True)
