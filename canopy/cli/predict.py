"""``canopy predict``: a canopy height map over a bounding box."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import click

from canopy.cli.options import (
    cluster_options,
    config_option,
    device_option,
    model_option,
    offline_option,
    precision_option,
    predict_option,
    quiet_option,
    weights_option,
)
from canopy.cli.progress import block_progress, download_progress
from canopy.choices import MosaicOrder, Normalize


class _Bands(click.ParamType):
    """``--bands 3,2,1``, or a list of three numbers from a ``--config`` file, as three integers."""

    name = "R,G,B"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        parts = value.split(",") if isinstance(value, str) else value
        try:
            bands = tuple(int(b) for b in parts)
        except (TypeError, ValueError):
            bands = ()
        if len(bands) != 3:
            self.fail(f"{value!r} is not three band numbers such as 1,2,3", param, ctx)
        return bands


class _BBoxText(click.ParamType):
    """``--bbox`` text, or a list of four numbers from a ``--config`` file (checked when the request is made)."""

    name = "MINX,MINY,MAXX,MAXY"

    def convert(self, value, param, ctx):
        return value if value is None or isinstance(value, str) else tuple(value)


@click.command()
@config_option
@predict_option("imagery", "imagery", multiple=True, required=True, metavar="SRC")
@predict_option("bands", type=_Bands(), metavar="R,G,B")
@predict_option("collections", "collections", multiple=True)
@predict_option("datetime", metavar="INTERVAL")
@predict_option("asset")
@predict_option("mosaic_order", type=click.Choice([o.value for o in MosaicOrder]), show_default=True)
@predict_option("normalize", type=click.Choice([n.value for n in Normalize]), show_default=True)
@predict_option("normalizer_weights", metavar="PATH")
@predict_option("calibration", type=click.Path(exists=True, dir_okay=False))
@predict_option("bbox", type=_BBoxText(), metavar="MINX,MINY,MAXX,MAXY")
@predict_option("bbox_crs", show_default=True)
@predict_option("out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@model_option
@weights_option
@predict_option("res", type=float)
@predict_option("crs")
@predict_option("chip_size", type=int)
@predict_option("overlap", type=int)
@predict_option("batch_size", type=click.IntRange(min=1))
@predict_option("block_size", type=click.IntRange(min=16), show_default=True)
@device_option
@precision_option
@predict_option("resume", is_flag=True)
@predict_option("quicklook", is_flag=True)
@predict_option("uncertainty", is_flag=True)
@predict_option("tta", is_flag=True)
@offline_option
@cluster_options
@quiet_option
def predict(quiet: bool, **options) -> None:
    """Predict canopy height over a bounding box and write a Cloud-Optimized GeoTIFF.

    Blocks run in this process, or on Dask: a local cluster (--workers) or an existing one
    (--scheduler, --scheduler-file), whose workers must see the imagery, the weights cache and
    the folder of --out.
    """
    from canopy.io.companions import existing_companions
    from canopy.prediction import predict_to_file
    from canopy.request import PredictRequest

    request = PredictRequest.from_options(**{**options, "imagery": list(options["imagery"]), "collections": list(options["collections"])})
    with ExitStack() as stack:
        on_download = stack.enter_context(download_progress(quiet))
        on_block = stack.enter_context(block_progress(quiet))
        summary = predict_to_file(request, progress=on_block, download_progress=on_download,
                                  cluster_started=lambda link: click.echo(f"Dask dashboard: {link}", err=True))
    out = request.output.path
    click.echo(
        f"wrote {out} ({summary.width} x {summary.height} px, {summary.res:g} m, {summary.crs}); "
        f"computed {_count(summary.blocks_computed, 'block')}, reused {summary.blocks_reused}; "
        f"{_count(summary.chips, 'chip')}, {summary.chip_pixels_per_output_pixel:.2f} chip px per output px",
        err=True,
    )
    click.echo(f"wrote {out.with_suffix('.qml')} (QGIS style)", err=True)
    for kind, path in existing_companions(out).items():
        click.echo(f"wrote {path} ({kind}, QGIS style beside it)", err=True)
    if request.output.quicklook:
        click.echo(f"wrote {out.with_suffix('.png')} (quicklook)", err=True)


def _count(n: int, word: str) -> str:
    """``1 block``, ``2 blocks``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
