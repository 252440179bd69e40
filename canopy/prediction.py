"""``canopy.predict``, the predict job: a canopy height map for a region, streamed block by block to a COG."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rioxarray
import torch
import xarray as xr
from rasterio.crs import CRS

from canopy._version import __version__
from canopy.errors import ChipLayoutError, ImageryError, OutputPathError, ResolutionWarning, WeightsNotFoundError
from canopy.grid import OutputGrid, check_bbox, parse_bbox, parse_crs, plan_grid, to_crs
from canopy.imagery import ImagerySource, open_imagery
from canopy.imagery.aerial_normalization import load_normalizer, region_affine
from canopy.imagery.radiometry import scale_for_region
from canopy.imagery.source import ImageryOptions
from canopy.io.atomic import atomic_path
from canopy.io.cog import assemble_cog, height_percentile
from canopy.io.partial import PartialRun
from canopy.io.qml import style_range, write_qml
from canopy.io.quicklook import write_quicklook
from canopy.models.height_model import LoadedModel, is_quantized, load_height_model, model_spec
from canopy.models.registry import ModelSpec, get_model_spec
from canopy.models.weights import ProgressCallback, cached_path, find_cached
from canopy.runtime.device import check_precision, precision_name, select_device, select_precision
from canopy.runtime.inference import ChipPredictor, auto_batch_size
from canopy.runtime.pipeline import run_blocks
from canopy.stitch import BorderChips, predict_block
from canopy.tiling import Block, ChipLayout, iter_blocks
from canopy.tiling.block_input import read_block

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("meta-chm-v1-huge", "meta-chm-v1-huge-compressed")
"""Used when no model is named, the first whose weights are in the cache."""


def default_model() -> str:
    """The model ``predict`` uses when none is named: Meta's huge canopy-height model, once its weights are cached.

    Raises
    ------
    WeightsNotFoundError
        If none of the default models' weights are cached; the message says where to put them.
    """
    for name in DEFAULT_MODELS:
        if find_cached(get_model_spec(name)) is not None:
            return name
    spec = get_model_spec(DEFAULT_MODELS[0])
    small = get_model_spec(DEFAULT_MODELS[1])
    raise WeightsNotFoundError(
        f"No --model given, and the default {spec.name} is not in the weights cache: download {spec.weights[0].url} "
        f"(2.9 GB, GPU) to {cached_path(spec, spec.weights[0])}, or {small.weights[0].url} (749 MB, CPU) to "
        f"{cached_path(small, small.weights[0])}, or pass --model NAME (see `canopy models`)."
    )


@dataclass(frozen=True)
class Progress:
    """Where a run stands: blocks and square kilometres done of the total."""

    blocks_done: int
    blocks_total: int
    km2_done: float
    km2_total: float


@dataclass(frozen=True)
class RunSummary:
    """What a run did: blocks computed now and reused from a partial run, chips run, chip, overlap and block size used.

    ``chip_pixels_per_output_pixel`` is the chips' area over the area of the blocks computed: the
    work per output pixel, at best the lattice's overlap factor ``(chip / (chip - overlap))²``
    (less where chips with no imagery are skipped, a little more along the region's edges).
    """

    blocks_computed: int
    blocks_reused: int
    chips: int
    chip_size: int
    overlap: int
    block_size: int
    chip_pixels_per_output_pixel: float


def check_output_path(out: Path) -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    Raises
    ------
    OutputPathError
        If the directory does not exist or is not writable, the path is a directory, or it is not ``.tif``.
    """
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise OutputPathError(f"Output {out} must end in .tif or .tiff (a GeoTIFF is written).")
    if out.is_dir():
        raise OutputPathError(f"Output {out} is a directory; give a file name such as {out / 'height.tif'}.")
    parent = out.parent
    if not parent.is_dir():
        raise OutputPathError(f"Output directory {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"Output directory {parent} is not writable; choose another --out.")
    return out


def predict(
    imagery: str | os.PathLike | ImagerySource | Sequence[str | os.PathLike | ImagerySource],
    bbox: str | Sequence[float] | None = None,
    *,
    bbox_crs: str = "EPSG:4326",
    model: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    res: float | None = None,
    crs: str | None = None,
    chip_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    block_size: int = 2048,
    device: str = "auto",
    precision: str = "auto",
    resume: bool = False,
    quicklook: bool = False,
    offline: bool | None = None,
    bands: Sequence[int] | None = None,
    collections: Sequence[str] = (),
    datetime: str | None = None,
    asset: str | None = None,
    mosaic_order: str = "finest",
    normalize: str = "none",
    normalizer_weights: str | os.PathLike | None = None,
    progress: Callable[[Progress], None] | None = None,
    download_progress: ProgressCallback | None = None,
) -> xr.DataArray:
    """Predict canopy height over a region and return it as a georeferenced DataArray.

    The output grid covers ``bbox`` in the imagery's CRS (or ``crs``) at the model's ground
    resolution (or ``res``), snapped to whole pixels. It is cut into blocks; each block's chips
    run through the model in batches and are blended with a smooth, strictly positive window.
    Blocks are kept as they finish, so an interrupted run can ``resume``; at the end they become a
    Cloud-Optimized GeoTIFF with a QGIS style sidecar, renamed onto ``out`` only when complete.

    Parameters
    ----------
    imagery
        One or more GeoTIFF paths or URLs, directories or globs of GeoTIFFs, STAC catalogues
        (``.json``) or STAC API searches (``stac+https://…/search``), or
        :class:`~canopy.imagery.ImagerySource` objects.
    bbox
        ``minx,miny,maxx,maxy`` (west, south, east, north) as a string or four numbers; None for
        the imagery's extent.
    bbox_crs
        CRS of ``bbox``.
    model
        A registry name (see ``canopy models``) or a model file from ``canopy train``; None for
        Meta's huge canopy-height model when its weights are cached (an error saying where to put
        them otherwise).
    weights
        Backbone weights: a path, ``random`` (tests and benchmarks; warns), or None for the cache
        or a download.
    out
        Write the map here as a COG, plus ``<name>.qml`` beside it; None keeps it in memory only.
    res
        Output pixel size in metres; default the model's ground resolution.
    crs
        Output CRS; default the imagery's, or the UTM zone of the region for mixed or geographic imagery.
    chip_size
        Chip side in pixels, a multiple of the model's patch size; default the model's.
    overlap
        Overlap between neighbouring chips in pixels; default a quarter of the chip.
    batch_size
        Chips per model call; None for the device's fastest measured (4 on the CPU, more on a GPU).
    block_size
        Block side in output pixels: the unit of memory, progress and resume; rounded to a whole
        multiple of the chip stride (chip size minus overlap), so each chip is computed once.
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    precision
        ``auto`` (bf16 on CUDA GPUs and on CPUs with bf16 matrix instructions, fp32 elsewhere and
        for int8 models on the CPU), ``fp32``, ``bf16`` or ``fp16``.
    resume
        Continue a partial run of the same settings at ``out``.
    quicklook
        Also write ``<name>.png`` with a colour bar (needs ``out``).
    offline
        Forbid weight downloads; None reads ``CANOPY_OFFLINE``.
    bands
        1-based red, green and blue band indexes; default by colour interpretation, else 1, 2, 3.
    collections, datetime, asset
        STAC filters and the RGB asset key (default ``visual``, ``rgb``, ``image`` or ``data``).
    mosaic_order
        Which source wins where several overlap: ``finest`` (then most recent), ``latest`` (then
        finest) or ``given``.
    normalize
        ``none``, or ``aerial`` to stretch aerial imagery to the satellite radiometry of Meta's
        models with their normalisation network, one affine per band for the whole region.
    normalizer_weights
        The normalisation network's checkpoint; None for the cache or a download.
    progress
        Called after each block with a :class:`Progress`.
    download_progress
        Called while weights download.

    Returns
    -------
    xarray.DataArray
        Heights in metres (float32), NaN where there is no imagery, with CRS and transform set
        (``.rio``); read lazily from ``out`` when given. ``attrs["summary"]`` is a :class:`RunSummary`.

    Raises
    ------
    CanopyError
        Any of its subclasses, with a sentence saying what to fix; nothing is left at ``out``.
    """
    target = check_output_path(Path(out)) if out is not None else None
    if isinstance(imagery, (str, os.PathLike, ImagerySource)):
        imagery = [imagery]
    parsed_bbox = parse_bbox(bbox) if bbox is not None else None
    bbox_crs_obj = parse_crs(bbox_crs, "--bbox-crs")
    out_crs = parse_crs(crs, "--crs") if crs is not None else None
    torch_device = select_device(device)
    check_precision(precision)
    if normalize not in ("none", "aerial"):
        raise ImageryError(f"--normalize {normalize!r} is not one of none, aerial.")
    model = default_model() if model is None else model
    spec = model_spec(model)
    layout = _chip_layout(spec, chip_size, overlap)
    region = None
    if parsed_bbox is not None:
        check_bbox(parsed_bbox, bbox_crs_obj)
        region = to_crs(parsed_bbox, bbox_crs_obj, CRS.from_epsg(4326))
    options = ImageryOptions(tuple(bands) if bands else None, tuple(collections), datetime, asset, mosaic_order)
    sources = open_imagery(list(imagery), region, options)
    try:
        grid = plan_grid(
            [(s.crs, s.bounds) for s in sources], parsed_bbox, bbox_crs_obj, res or spec.ground_resolution, out_crs
        )
        radiometry = scale_for_region(sources, grid)
        _warn_about_resolution(spec, sources)
        loaded = load_height_model(model, weights, offline=offline, progress=download_progress, device=torch_device)
        autocast = select_precision(torch_device, precision, quantized=is_quantized(loaded.model))
        radiometry += _aerial_normalization(normalize, normalizer_weights, loaded, sources, grid, offline, download_progress)
        batch_size = batch_size or auto_batch_size(torch_device, layout.size)
        job = _Job(sources, grid, loaded, layout, torch_device, autocast, batch_size, block_size, radiometry)
        log.info("output grid: %d x %d px of %g m in %s", grid.width, grid.height, grid.res, grid.crs.to_string())
        if target is None:
            with tempfile.TemporaryDirectory(prefix="canopy-") as tmp:
                path = Path(tmp) / "height.tif"
                summary = _run(job, path, False, False, progress)
                with rioxarray.open_rasterio(path, masked=True) as data:
                    result = data.load()
        else:
            summary = _run(job, target, resume, quicklook, progress)
            result = rioxarray.open_rasterio(target, masked=True)
    finally:
        for source in sources:
            source.close()
    result = result.squeeze("band", drop=True).rename("canopy_height")
    result.attrs.update(units="m", long_name="canopy height", summary=summary)
    return result


def _aerial_normalization(normalize, weights, loaded, sources, grid, offline, progress) -> str:
    """Apply ``--normalize aerial`` to the loaded model; return what to add to the radiometry tag."""
    if normalize == "none":
        return ""
    network = load_normalizer(weights, offline=offline, progress=progress)
    gain, offset = region_affine(network, sources, grid)
    loaded.model.set_input_affine(gain, offset)
    log.info("aerial normalisation: gain %s, offset %s", gain, offset)
    return f"; aerial normalisation for the region: rgb * {np.round(gain, 4).tolist()} + {np.round(offset, 4).tolist()}"


def _warn_about_resolution(spec: ModelSpec, sources: Sequence) -> None:
    """Say what to expect when imagery is far from the resolution the model was trained on."""
    if spec.resolution_range is None:
        return
    low, high = spec.resolution_range
    for source in sources:
        if source.crs.is_projected and not low <= source.res <= high:
            side = "finer" if source.res < low else "coarser"
            warnings.warn(
                f"Imagery {source.name} is at {source.res:g} m, {side} than the {low:g}-{high:g} m that {spec.name} "
                f"was made for (it is resampled to {spec.ground_resolution:g} m): expect less accurate heights, "
                "particularly for small or sparse trees.",
                ResolutionWarning,
                stacklevel=3,
            )


def _chip_layout(spec: ModelSpec, chip_size: int | None, overlap: int | None) -> ChipLayout:
    """The chip lattice for a model, refusing sizes that do not fit its patch size."""
    size = chip_size or spec.chip_size
    try:
        return ChipLayout(size, size // 4 if overlap is None else overlap, spec.backbone.patch_size)
    except ValueError as exc:
        raise ChipLayoutError(f"{exc} Choose --chip-size and --overlap to fit model {spec.name}.") from None


@dataclass(frozen=True)
class _Job:
    """Everything that decides a run's pixels, gathered and validated by :func:`predict`."""

    sources: list
    grid: OutputGrid
    loaded: LoadedModel
    layout: ChipLayout
    device: torch.device
    autocast: torch.dtype | None
    batch_size: int
    block_size: int
    radiometry: str

    def tags(self) -> dict[str, str]:
        """The GeoTIFF tags that record how the map was made."""
        spec, sources = self.loaded.spec, self.sources
        names = ", ".join(s.name for s in sources[:20]) + (f" and {len(sources) - 20} more" if len(sources) > 20 else "")
        return {
            "canopy_model": spec.name,
            "canopy_weights": self.loaded.backbone_weights,
            "canopy_head_weights": self.loaded.head_weights,
            "canopy_version": __version__,
            "canopy_chip_size": str(self.layout.size),
            "canopy_overlap": str(self.layout.overlap),
            "canopy_normalization": f"mean={list(spec.normalization.mean)} std={list(spec.normalization.std)} on RGB/255",
            "canopy_precision": precision_name(self.autocast),
            "canopy_radiometry": self.radiometry,
            "canopy_imagery": names,
            "units": "m",
        }

    def fingerprint(self) -> dict:
        """The tags plus what else a resumed run must share with the one it continues."""
        grid = self.grid
        return {
            **self.tags(),
            "grid": [grid.crs.to_wkt(), grid.res, grid.left, grid.top, grid.width, grid.height],
            "block_size": self.block_size,
            "device": self.device.type,
            "imagery": [s.identity() if hasattr(s, "identity") else getattr(s, "name", "?") for s in self.sources],
        }


def _run(job: _Job, target: Path, resume: bool, quicklook: bool, progress: Callable[[Progress], None] | None) -> RunSummary:
    """Predict every block not already done, then assemble the COG and its sidecars atomically."""
    grid, layout, spec = job.grid, job.layout, job.loaded.spec
    partial = PartialRun(target, job.fingerprint(), resume)
    block_size = layout.block_size(job.block_size)
    blocks = iter_blocks(grid.height, grid.width, block_size)
    done = partial.done()
    todo = [b for b in blocks if b.key not in done]
    predictor = ChipPredictor(job.loaded.model, job.device, job.autocast)
    fill = np.asarray(spec.normalization.mean, np.float32)
    borders = BorderChips(block_size, grid.shape, partial.read_border)

    def km2(some: list[Block]) -> float:
        return sum(b.height * b.width for b in some) * grid.res**2 / 1e6

    state = {"count": len(blocks) - len(todo), "km2": km2([b for b in blocks if b.key in done])}
    total_km2 = km2(blocks)

    def on_done(block: Block) -> None:
        state["count"] += 1
        state["km2"] += km2([block])
        if progress is not None:
            progress(Progress(state["count"], len(blocks), state["km2"], total_km2))

    if progress is not None:
        progress(Progress(state["count"], len(blocks), state["km2"], total_km2))
    run_blocks(
        todo,
        read=lambda b: read_block(job.sources, grid, b, layout, fill),
        compute=lambda inp: predict_block(inp, layout, predictor, job.batch_size, borders),
        write=lambda b, result: partial.write(b, *result, grid),
        on_done=on_done,
    )
    with atomic_path(target) as tmp_tif:
        counts = assemble_cog(partial, grid, blocks, job.tags(), tmp_tif)
        vmax = style_range(height_percentile(counts, 98))
        write_qml(target.with_suffix(".qml"), vmax)
        if quicklook:
            write_quicklook(tmp_tif, target.with_suffix(".png"), vmax, title=f"{target.name} ({spec.name})")
    partial.remove()
    area = sum(b.height * b.width for b in todo)
    per_pixel = predictor.chips_done * layout.size**2 / area if area else 0.0
    summary = RunSummary(len(todo), len(blocks) - len(todo), predictor.chips_done, layout.size, layout.overlap, block_size, per_pixel)
    log.info("computed %d blocks, reused %d; %d chips, %.2f chip px per output px", summary.blocks_computed,
             summary.blocks_reused, summary.chips, per_pixel)
    return summary
