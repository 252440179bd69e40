"""``canopy change``: height change between two canopy height maps, with loss and gain polygons."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import cluster_spec, engine_options


@click.command()
@click.argument("before", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("after", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The difference COG (.tif); loss and gain polygons go beside it as <name>.gpkg.")
@click.option("--threshold", type=float, default=5.0, show_default=True, help="A pixel changed when its height fell (rose) by more than this (m).")
@click.option("--error-rmse", type=float, default=None,
              help="Instead of --threshold: the maps' RMSE against lidar (m, from `canopy evaluate`); the threshold is 1.96 x sqrt(2) x RMSE.")
@click.option("--min-area-ha", type=float, default=0.05, show_default=True, help="Loss and gain smaller than this (ha) is speckle.")
@click.option("--opening", type=float, default=0.0, show_default=True, help="Open the changed pixels with a disc this wide (m) first; 0 for none.")
@click.option("--res", type=float, default=None, help="Pixel size (m) of the common grid  [default: the first map's grid]")
@click.option("--crs", default=None, help="CRS of the common grid  [default: the first map's]")
@click.option("--forest", is_flag=True, help="Also map the first date's FAO forest and report the forest area lost.")
@click.option("--coregister/--no-coregister", default=True, show_default=True,
              help="Estimate AFTER's shift against BEFORE (sub-pixel, from what did not change) and undo it first.")
@engine_options
def change(before: Path, after: Path, out: Path, threshold: float, error_rmse: float | None, min_area_ha: float, opening: float,
           res: float | None, crs: str | None, forest: bool, coregister: bool, block_size: int, resume: bool, **cluster) -> None:
    """Map height change from BEFORE to AFTER (two dates; any models, grids or CRSs): the difference, and where
    height fell or rose by more than a threshold over at least a minimum area."""
    from canopy.analysis.change import change as run_change
    from canopy.analysis.forest_rule import ForestDefinition

    result = run_change(before, after, out, threshold=threshold, error_rmse=error_rmse, min_area_ha=min_area_ha, opening=opening,
                        res=res, crs=crs, forest_definition=ForestDefinition() if forest else None, block_size=block_size,
                        cluster=cluster_spec(cluster), resume=resume, coregister=coregister)
    (losses, lost_ha), (gains, gained_ha) = result.counts["loss"], result.counts["gain"]
    if result.shift is not None:
        click.echo(f"shift of {after.name} against {before.name}: {result.shift.describe()}")
    click.echo(f"{before.name} ({result.before_date or 'date unknown'}) -> {after.name} ({result.after_date or 'date unknown'}), "
               f"threshold {result.threshold:.2f} m: {losses} loss polygons ({lost_ha:.2f} ha), "
               f"{gains} gain polygons ({gained_ha:.2f} ha)")
    if result.forest_lost_ha is not None:
        click.echo(f"forest of the first date: {result.forest.forest_area_ha:.2f} ha, of which lost: {result.forest_lost_ha:.2f} ha")
    click.echo(f"wrote {out} (difference, style beside it) and {out.with_suffix('.gpkg')} (layers loss and gain)", err=True)


@click.command("evaluate-change")
@click.argument("before", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("after", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("lidar_before", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("lidar_after", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the table as CSV.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write F1 by threshold x area as a PNG.")
def evaluate_change(before: Path, after: Path, lidar_before: Path, lidar_after: Path, csv_out: Path | None,
                    plot: Path | None) -> None:
    """Score the height loss from BEFORE to AFTER (two maps) against the loss between two lidar CHMs of the same dates,
    as Open-Canopy-Δ does: precision, recall, F1 and IoU at thresholds 5-20 m x minimum areas 10-400 m²."""
    from canopy.accuracy.change_scoring import evaluate_change as score

    scores = score(before, after, lidar_before, lidar_after)
    click.echo(f"difference against lidar: MAE {scores.mae:.2f} m, RMSE {scores.rmse:.2f} m, bias {scores.bias:+.2f} m "
               f"({scores.n} pixels)")
    click.echo(scores.table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if csv_out is not None:
        scores.write_csv(csv_out)
    if plot is not None:
        scores.plot(plot)
