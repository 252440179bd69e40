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
@click.option("--imagery", "imagery", multiple=True, required=True, metavar="SRC",
              help="GeoTIFF file or URL, directory or glob of GeoTIFFs, STAC catalogue (.json) or STAC API (stac+https://…/search); repeatable.")
@click.option("--bands", type=_Bands(), default=None, metavar="R,G,B", help="1-based band indexes of red, green, blue (default: by colour interpretation).")
@click.option("--collection", "collections", multiple=True, help="STAC collection to search; repeatable.")
@click.option("--datetime", default=None, metavar="INTERVAL", help="STAC datetime filter, e.g. 2020-01-01/2022-12-31.")
@click.option("--asset", default=None, help="STAC asset key of the RGB image (default: visual, rgb, image or data).")
@click.option("--mosaic-order", type=click.Choice([o.value for o in MosaicOrder]), default="finest", show_default=True,
              help="Which source wins where several overlap.")
@click.option("--normalize", type=click.Choice([n.value for n in Normalize]), default="none", show_default=True,
              help="aerial: stretch aerial imagery to the satellite radiometry Meta's models expect (whole region).")
@click.option("--normalizer-weights", default=None, metavar="PATH", help="Checkpoint of the aerial normalisation network.")
@click.option("--calibration", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A file from `canopy calibrate`, applied to the heights (made for this model and weights).")
@click.option("--bbox", type=_BBoxText(), default=None, metavar="MINX,MINY,MAXX,MAXY", help="Region (west,south,east,north); default the imagery's extent.")
@click.option("--bbox-crs", default="EPSG:4326", show_default=True, help="CRS of --bbox.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output COG (.tif); a .qml style is written beside it.")
@model_option
@weights_option
@click.option("--res", type=float, default=None, help="Output pixel size in metres (default: the model's).")
@click.option("--crs", default=None, help="Output CRS (default: the imagery's, or the region's UTM zone).")
@click.option("--chip-size", type=int, default=None, help="Chip side in px, a multiple of the patch size (default: the model's).")
@click.option("--overlap", type=int, default=None, help="Overlap between chips in px (default: a quarter chip).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Chips per model call  [default: 4 on the CPU, 32 chips of 256 px (scaled by area) on a GPU]")
@click.option("--block-size", type=click.IntRange(min=16), default=2048, show_default=True, help="Block side in output px.")
@device_option
@precision_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run with the same settings.")
@click.option("--quicklook", is_flag=True, help="Also write <name>.png with a colour bar.")
@offline_option
@cluster_options
@quiet_option
def predict(quiet: bool, **options) -> None:
    """Predict canopy height over a bounding box and write a Cloud-Optimized GeoTIFF.

    Blocks run in this process, or on Dask: a local cluster (--workers) or an existing one
    (--scheduler, --scheduler-file), whose workers must see the imagery, the weights cache and
    the folder of --out.
    """
    from canopy.prediction import RunSummary, predict as run_predict
    from canopy.request import PredictRequest

    request = PredictRequest.from_options(**{**options, "imagery": list(options["imagery"]), "collections": list(options["collections"])})
    with ExitStack() as stack:
        on_download = stack.enter_context(download_progress(quiet))
        on_block = stack.enter_context(block_progress(quiet))
        result = run_predict(request, progress=on_block, download_progress=on_download,
                             cluster_started=lambda link: click.echo(f"Dask dashboard: {link}", err=True))
    out = request.output.path
    summary = RunSummary.from_attrs(result.attrs)
    height, width = result.shape
    click.echo(
        f"wrote {out} ({width} x {height} px, {abs(result.rio.resolution()[0]):g} m, {result.rio.crs}); "
        f"computed {summary.blocks_computed} blocks, reused {summary.blocks_reused}; "
        f"{summary.chips} chips, {summary.chip_pixels_per_output_pixel:.2f} chip px per output px",
        err=True,
    )
    click.echo(f"wrote {out.with_suffix('.qml')} (QGIS style)", err=True)
    if request.output.quicklook:
        click.echo(f"wrote {out.with_suffix('.png')} (quicklook)", err=True)
