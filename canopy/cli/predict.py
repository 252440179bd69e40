"""``canopy predict``: a canopy height map over a bounding box."""

from __future__ import annotations

from pathlib import Path

import click

from canopy.cli.options import (
    config_option,
    device_option,
    model_option,
    offline_option,
    precision_option,
    quiet_option,
    weights_option,
)
from canopy.cli.progress import block_progress, download_progress
from canopy.prediction import predict as run_predict


@click.command()
@config_option
@click.option("--imagery", "imagery", multiple=True, required=True, metavar="SRC",
              help="GeoTIFF file or URL, directory or glob of GeoTIFFs, STAC catalogue (.json) or STAC API (stac+https://…/search); repeatable.")
@click.option("--bands", default=None, metavar="R,G,B", help="1-based band indexes of red, green, blue (default: by colour interpretation).")
@click.option("--collection", "collections", multiple=True, help="STAC collection to search; repeatable.")
@click.option("--datetime", "datetime_", default=None, metavar="INTERVAL", help="STAC datetime filter, e.g. 2020-01-01/2022-12-31.")
@click.option("--asset", default=None, help="STAC asset key of the RGB image (default: visual, rgb, image or data).")
@click.option("--mosaic-order", type=click.Choice(["finest", "latest", "given"]), default="finest", show_default=True,
              help="Which source wins where several overlap.")
@click.option("--normalize", type=click.Choice(["none", "aerial"]), default="none", show_default=True,
              help="aerial: stretch aerial imagery to the satellite radiometry Meta's models expect (whole region).")
@click.option("--normalizer-weights", default=None, metavar="PATH", help="Checkpoint of the aerial normalisation network.")
@click.option("--bbox", default=None, metavar="MINX,MINY,MAXX,MAXY", help="Region (west,south,east,north); default the imagery's extent.")
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
@quiet_option
def predict(imagery, bands, collections, datetime_, asset, mosaic_order, normalize, normalizer_weights, bbox, bbox_crs, out, model, weights, res, crs, chip_size,
            overlap, batch_size, block_size, device, precision, resume, quicklook, offline, quiet) -> None:
    """Predict canopy height over a bounding box and write a Cloud-Optimized GeoTIFF."""
    with download_progress(quiet) as on_download, block_progress(quiet) as on_block:
        result = run_predict(
            list(imagery),
            bbox,
            bbox_crs=bbox_crs,
            model=model,
            weights=weights,
            out=out,
            res=res,
            crs=crs,
            chip_size=chip_size,
            overlap=overlap,
            batch_size=batch_size,
            block_size=block_size,
            device=device,
            precision=precision,
            resume=resume,
            quicklook=quicklook,
            offline=offline,
            bands=_parse_bands(bands),
            collections=collections,
            datetime=datetime_,
            asset=asset,
            mosaic_order=mosaic_order,
            normalize=normalize,
            normalizer_weights=normalizer_weights,
            progress=on_block,
            download_progress=on_download,
        )
    summary = result.attrs["summary"]
    height, width = result.shape
    click.echo(
        f"wrote {out} ({width} x {height} px, {abs(result.rio.resolution()[0]):g} m, {result.rio.crs}); "
        f"computed {summary.blocks_computed} blocks, reused {summary.blocks_reused}; "
        f"{summary.chips} chips, {summary.chip_pixels_per_output_pixel:.2f} chip px per output px",
        err=True,
    )


def _parse_bands(text: str | None) -> tuple[int, int, int] | None:
    """``--bands 3,2,1`` as three integers."""
    if text is None:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        bands = ()
    if len(bands) != 3:
        raise click.BadParameter(f"{text!r} is not three band numbers such as 1,2,3", param_hint="--bands")
    return bands
