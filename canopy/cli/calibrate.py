"""``canopy calibrate``: a monotone mapping from a model's heights to the user's lidar, with its held-out proof."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import cluster_spec, engine_options


@click.command()
@click.argument("map_path", metavar="MAP", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("references", metavar="REFERENCE...", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The calibration (JSON).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the mapping over the pairs as a PNG.")
def calibrate(map_path: Path, references: tuple[Path, ...], out: Path, plot: Path | None) -> None:
    """Fit MAP's heights to the lidar heights of REFERENCE plots (isotonic regression) and check it on held-out plots.

    Apply it with `canopy predict --calibration FILE`, or `canopy.apply_calibration` on an existing map.
    """
    from canopy.accuracy.calibration_fit import METRICS
    from canopy.accuracy.calibration_fit import calibrate as fit

    result = fit(map_path, list(references), out, plot=plot)
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
