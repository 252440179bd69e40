"""``canopy calibrate``: a monotone mapping from a model's heights to the user's lidar, with its held-out proof."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import cluster_spec, engine_options, point_options, point_reference


@click.command()
@click.argument("map_path", metavar="MAP", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("references", metavar="REFERENCE...", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The calibration (JSON).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the mapping over the pairs as a PNG.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9, show_default=True,
              help="The prediction interval's level: the share of reference heights it should hold.")
@point_options
def calibrate(map_path: Path, references: tuple[Path, ...], out: Path, plot: Path | None, level: float, **points) -> None:
    """Fit MAP's heights to the lidar heights of REFERENCE plots (isotonic regression), and a prediction interval around
    them (conformal, scaled by MAP's uncertainty when it has one beside it), and check both on held-out plots.

    Apply it with `canopy predict --calibration FILE`, or `canopy.apply_calibration` and `canopy.prediction_interval`
    on an existing map. With --height-column, REFERENCE files are points (GEDI footprints, field plots).
    """
    from canopy.accuracy.calibration_fit import METRICS
    from canopy.accuracy.calibration_fit import calibrate as fit

    result = fit(map_path, list(references), out, plot=plot, level=level, points=point_reference(points))
    v = result.validation
    click.echo(f"{result.pairs} pairs, predicted heights {result.range_m[0]:.1f}-{result.range_m[1]:.1f} m, "
               f"{len(result.breakpoints)} breakpoints")
    if v.get("folds"):
        click.echo(f"held out ({v['scheme']}, {v['folds']} folds):   before      after")
        for name in METRICS:
            before, after = v["before"][name], v["after"][name]
            unit = "" if name == "r2" else " m"
            click.echo(f"  {name.upper():<5}{'':27}{_fmt(before, unit):<12}{_fmt(after, unit)}")
    else:
        click.echo(f"not validated: {v.get('note')}")
    if "interval" in v:
        interval = v["interval"]
        click.echo(f"{interval['level']:.0%} interval on held-out parts, PICP / MPIW:   one global      fitted "
                   f"(scaled by {interval['scaled_by']}, by height bin)")
        rows = [("all", interval["before"], interval["after"])]
        rows += [(name, interval["before"]["by_height_bin"][name], row) for name, row in interval["after"]["by_height_bin"].items()]
        for name, before, after in rows:
            click.echo(f"  {name + ' m' if name != 'all' else name:<8}{before['n']:>8} px{'':18}{_fmt(before['picp'], '')} / "
                       f"{_fmt(before['mpiw'], ' m'):<10}{_fmt(after['picp'], '')} / {_fmt(after['mpiw'], ' m')}")
    elif v.get("interval_note"):
        click.echo(f"interval: {v['interval_note']}")
    click.echo(f"wrote {out}" + (f" and {plot}" if plot else ""), err=True)


def _fmt(value: float | None, unit: str) -> str:
    """A metric with three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}{unit}"


@click.command("apply-calibration")
@click.argument("map_path", metavar="MAP", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The calibrated map (COG, .tif).")
@engine_options
def apply_calibration(map_path: Path, calibration: Path, out: Path, block_size: int, resume: bool, **cluster) -> None:
    """Apply CALIBRATION (from `canopy calibrate`) to MAP, an existing map of the model it was fitted for, block by block."""
    from canopy.analysis.calibrated_map import apply_calibration as apply

    apply(map_path, calibration, out, block_size=block_size, cluster=cluster_spec(cluster), resume=resume)
    click.echo(f"wrote {out} (QGIS style beside it)", err=True)
