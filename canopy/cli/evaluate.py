"""``canopy evaluate``: a height map against reference canopy height."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("prediction", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the metrics as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also write a density scatter PNG.")
@click.option("--block-size", type=click.IntRange(min=1), default=50, show_default=True, help="Block side (reference px) for block R².")
def evaluate(prediction: Path, reference: Path, json_out: Path | None, plot: Path | None, block_size: int) -> None:
    """Compare PREDICTION with REFERENCE on the reference's grid: MAE, RMSE, bias, R², block R²."""
    from canopy.accuracy.evaluation import evaluate as run_evaluate, format_table, write_scatter

    metrics = run_evaluate(prediction, reference, block_size=block_size)
    click.echo(format_table(metrics))
    if json_out is not None:
        metrics.write_json(json_out)
    if plot is not None:
        write_scatter([(prediction, reference)], metrics, plot, title=f"{prediction.name} vs {reference.name}")
