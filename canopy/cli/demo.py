"""``canopy demo``: the whole job on bundled real data, offline."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.demo import run_demo


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True)
def demo(out_dir: Path) -> None:
    """Run the demo on bundled NEON plots and write maps, styles and quicklooks to OUT."""
    result = run_demo(out_dir, say=lambda line: click.echo(line, err=True))
    for path in result.maps:
        click.echo(f"wrote {path} (+ {path.with_suffix('.qml').name}, {path.with_suffix('.png').name})")
