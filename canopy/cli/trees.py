"""``canopy trees`` (tree tops and crowns of a height map) and ``canopy evaluate-trees`` (scored against reference crowns)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import click

from canopy.analysis.tree_tops import TreeParameters
from canopy.cli.options import cluster_spec, engine_options, polygons_options


def _field_help(cls: type) -> dict[str, str]:
    """Each field's sentence, from the dataclass's own Parameters section (documented once)."""
    section = cls.__doc__.split("----------\n", 1)[1]
    helps: dict[str, str] = {}
    for names, text in re.findall(r"^    (\w[\w, ]*)\n((?:        .*\n?)+)", section, flags=re.M):
        for name in names.split(", "):
            helps[name] = " ".join(text.replace("``", "").split())
    return helps


def documented_options(cls: type):
    """A decorator adding one option per field of a dataclass of numbers (``--min-height`` ...), default and help from the class."""
    helps = _field_help(cls)

    def decorate(command):
        """Add the options to ``command``, in the fields' order."""
        for f in reversed(fields(cls)):
            command = click.option(f"--{f.name.replace('_', '-')}", type=float, default=f.default, show_default=True,
                                   help=helps[f.name])(command)
        return command

    return decorate


@click.command()
@click.argument("chm", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="GeoPackage to write (layers tops and crowns).")
@polygons_options("Only trees whose top is in these polygons")
@documented_options(TreeParameters)
@click.option("--allometry", default=None, metavar="NAME|FILE.yaml",
              help="Also give each tree's DBH, AGB and carbon with their standard deviations: jucker2017-angiosperm, "
                   "jucker2017-gymnosperm, jucker2017-global-chave2014, ... (docs/biomass.md), or a YAML of your equations.")
@click.option("--wood-density", type=float, default=None, help="g/cm³, for a DBH-then-Chave allometry  [default: 0.6]")
@click.option("--carbon-fraction", type=float, default=0.47, show_default=True, help="Carbon per unit of dry biomass (IPCC).")
@engine_options
def trees(chm: Path, out: Path, polygons: Path | None, layer: str | None, block_size: int, resume: bool,
          allometry: str | None, wood_density: float | None, carbon_fraction: float, **parameters) -> None:
    """Find tree tops and crowns in a canopy height map CHM (predicted or lidar) and write them to a styled GeoPackage.

    Tops are local maxima in a window that grows with height, crowns follow Silva et al. (2016);
    every length is in metres. The map is read block by block, each tree computed in the block that
    holds its top, so memory stays bounded; --resume continues an interrupted run. With --allometry,
    each tree's stem diameter, biomass and carbon, with their uncertainty (the map's too, when it has one).
    """
    from canopy.analysis.allometry import get_allometry
    from canopy.analysis.trees import write_trees

    cluster = cluster_spec(parameters)
    equations = None
    if allometry is not None:
        equations = get_allometry(allometry, wood_density=wood_density, carbon_fraction=carbon_fraction)
    elif wood_density is not None:
        raise click.UsageError("--wood-density goes with --allometry; name the allometry too.")
    count = write_trees(chm, out, polygons, parameters=TreeParameters(**parameters), layer=layer, block_size=block_size,
                        cluster=cluster, resume=resume, allometry=equations)
    click.echo(f"wrote {out} ({count} trees: layers tops and crowns, styled for QGIS"
               + (f"; biomass by {equations.name})" if equations else ")"), err=True)


@click.command("evaluate-trees")
@click.argument("detected", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("reference", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--plots", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Polygons of the plots' extents  [default: each plot's reference trees' bounding box]")
@click.option("--plot-column", default="plot", show_default=True, help="The column naming each tree's (and polygon's) plot.")
@click.option("--iou", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.4, show_default=True,
              help="Intersection over union a pair of boxes must exceed to match.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the table as CSV.")
def evaluate_trees(detected: Path, reference: tuple[Path, ...], plots: Path | None, plot_column: str, iou: float,
                   csv_out: Path | None) -> None:
    """Score DETECTED crowns (from `canopy trees`) against REFERENCE tree boxes or crowns, as NeonTreeEvaluation does.

    Boxes are matched one to one (Hungarian assignment on IoU); precision and recall per plot, and
    their means over plots. Without a plot column, each REFERENCE file is one plot.
    """
    from canopy.accuracy.tree_matching import evaluate_trees as score

    scores = score(detected, list(reference), plots=plots, plot_column=plot_column, iou_threshold=iou)
    click.echo(scores.table().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if csv_out is not None:
        scores.write_csv(csv_out)
