"""``canopy evaluate``: a height map against reference canopy height."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import point_options, point_reference


@click.command()
@click.argument("prediction", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the metrics as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also write a density scatter PNG.")
@click.option("--block-size", type=click.IntRange(min=1), default=50, show_default=True, help="Block side (reference px) for block R².")
@click.option("--interval", "interval", default=None, metavar="LOWER,UPPER|CALIBRATION",
              help="Also score a prediction interval (PICP, MPIW): two rasters, or a calibration file whose interval is "
                   "computed around PREDICTION.")
@point_options
def evaluate(prediction: Path, reference: Path, json_out: Path | None, plot: Path | None, block_size: int,
             interval: str | None, **points) -> None:
    """Compare PREDICTION with REFERENCE on the reference's grid: MAE, RMSE, bias, R², block R²; and a prediction
    interval's coverage and width. With --height-column, REFERENCE is points (GEDI footprints, field plots)."""
    from canopy.accuracy.evaluation import evaluate as run_evaluate, format_table, write_scatter

    if interval is not None and "," in interval:
        interval = tuple(part.strip() for part in interval.split(",", 1))
    points = point_reference(points)
    if points is not None and plot is not None:
        raise click.UsageError("--plot draws the pixels of two rasters; leave it out with --height-column (points).")
    metrics = run_evaluate(prediction, reference, block_size=block_size, interval=interval, points=points)
    click.echo(format_table(metrics))
    if json_out is not None:
        metrics.write_json(json_out)
    if plot is not None:
        write_scatter([(prediction, reference)], metrics, plot, title=f"{prediction.name} vs {reference.name}")
