"""``canopy demo``: the whole job on bundled real data, offline."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True, help="Training epochs for the head.")
def demo(out_dir: Path, epochs: int) -> None:
    """Train, predict and evaluate on bundled NEON plots; write maps, plots and a report to OUT."""
    from canopy.demo import run_demo

    result = run_demo(out_dir, epochs=epochs, say=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {result.out_dir / 'report.md'}, {result.out_dir / 'evaluation.png'} and {len(result.maps)} maps in {result.out_dir / 'maps'}")
