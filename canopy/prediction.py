"""``canopy.predict``, the predict job: a canopy height map for a region, streamed block by block to a COG."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from canopy.analysis.maps import open_map, with_companions
from canopy.analysis.quicklook import write_quicklook
from canopy.calibration import map_identity
from canopy.cluster import client_for
from canopy.errors import LargeRegionWarning, RequestError, warn
from canopy.grid import Block
from canopy.imagery import ImagerySource
from canopy.io.atomic import atomic_path
from canopy.io.cog import UNCERTAINTY as UNCERTAINTY_BAND
from canopy.io.cog import StreamingCog, height_percentile, interval_band
from canopy.io.companions import KINDS, LOWER, UNCERTAINTY, UPPER, companion, existing_companions
from canopy.io.gdal_env import run_env
from canopy.io.output_lock import output_lock
from canopy.io.partial import PartialRun
from canopy.io.qml import style_range, uncertainty_qml, uncertainty_range, write_qml
from canopy.models.weights import ProgressCallback
from canopy.request import PredictRequest
from canopy.runtime.local import LocalEngine
from canopy.runtime.numerics import AGREEMENT_BOUND_M
from canopy.runtime.plan import RunPlan, make_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a run stands: blocks and square kilometres done of the total, and chips predicted.

    Within a block, ``km2_done`` moves with the chips predicted (in this process; on a cluster, by
    whole blocks), so a run of one block shows progress too.
    """

    blocks_done: int
    blocks_total: int
    km2_done: float
    km2_total: float
    chips_done: int = 0


@dataclass(frozen=True)
class RunSummary:
    """What a run did: blocks computed now and reused from a partial run, chips run, chip, overlap and block size used,
    and the map's grid (``width`` x ``height`` px of ``res`` m in ``crs``).

    ``chip_pixels_per_output_pixel`` is the chips' area over the area of the blocks computed: the
    work per output pixel, at best the lattice's overlap factor ``(chip / (chip - overlap))²``
    (less where chips with no imagery are skipped, a little more along the region's edges).

    .. versionchanged:: 0.3.0
       ``width``, ``height``, ``res`` and ``crs``.
    """

    blocks_computed: int
    blocks_reused: int
    chips: int
    chip_size: int
    overlap: int
    block_size: int
    chip_pixels_per_output_pixel: float
    width: int
    height: int
    res: float
    crs: str

    def to_attrs(self) -> dict[str, int | float]:
        """The summary as plain attributes, ``canopy_run_<field>``, which netCDF and Zarr can store."""
        return {f"canopy_run_{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> RunSummary:
        """The summary a map's attributes hold (from :func:`canopy.predict`, or read back from netCDF or Zarr).

        Raises
        ------
        KeyError
            If the attributes hold no run summary.
        """
        return cls(**{f.name: attrs[f"canopy_run_{f.name}"] for f in fields(cls)})


def predict(
    imagery: PredictRequest | str | os.PathLike | ImagerySource | Sequence[str | os.PathLike | ImagerySource],
    bbox: str | Sequence[float] | None = None,
    *,
    client: Any = None,
    progress: Callable[[Progress], None] | None = None,
    download_progress: ProgressCallback | None = None,
    cluster_started: Callable[[str], None] | None = None,
    **options: Any,
) -> xr.DataArray:
    """Predict canopy height over a region and return it as a georeferenced DataArray.

    The output grid covers ``bbox`` in the imagery's CRS (or ``crs``) at the model's ground
    resolution (or ``res``), snapped to whole pixels. It is cut into blocks; each block's chips
    run through the model in batches and are blended with a smooth, strictly positive window.
    Blocks are kept as they finish, so an interrupted run can ``resume``; at the end they become a
    Cloud-Optimized GeoTIFF with a QGIS style sidecar, renamed onto ``out`` only when complete.
    Blocks are computed in this process, or on a Dask cluster (``client``, ``workers``,
    ``scheduler`` or ``scheduler_file``), with the same bytes either way.

    Parameters
    ----------
    imagery
        A :class:`~canopy.request.PredictRequest` (then no other option is given), or one or more
        GeoTIFF paths or URLs, directories or globs of GeoTIFFs, STAC catalogues (``.json``) or
        STAC API searches (``stac+https://…/search``), or :class:`~canopy.imagery.ImagerySource` objects.
    bbox
        ``minx,miny,maxx,maxy`` (west, south, east, north) as a string or four numbers; None for
        the imagery's extent.
    client
        A ``dask.distributed.Client`` to compute blocks on; its workers must see the imagery paths,
        the weights cache and the folder of ``out`` (a temporary folder when ``out`` is None).
    progress
        Called after each block with a :class:`Progress`.
    download_progress
        Called while weights download.
    cluster_started
        Called with the dashboard's address when a local Dask cluster (``workers``) has started.
    **options
        The keywords of :meth:`PredictRequest.from_options <canopy.request.PredictRequest.from_options>`,
        one per predict option, each named, defaulted and explained once in
        :data:`canopy.predict_options.PREDICT_OPTIONS` (listed in ``docs/predict_options.md``): the
        region's CRS, the model and its weights, the output and its grid, the chip layout, batch and
        block sizes, device and precision, resume and quicklook, the imagery's bands and STAC
        filters, the mosaic order, aerial normalisation, the cluster, and a calibration.

    Returns
    -------
    xarray.DataArray
        Heights in metres (float32), NaN where there is no imagery, with CRS and transform set
        (``.rio``); read lazily from ``out`` when given. With ``uncertainty`` it has a coordinate
        ``uncertainty`` (y, x) in metres, and with a calibration that holds an interval ``lower`` and
        ``upper`` (:func:`~canopy.analysis.maps.with_companions`). Its attributes are the map's tags and the
        run's :class:`RunSummary` as plain values (``RunSummary.from_attrs(result.attrs)``), so
        ``to_netcdf`` and ``to_zarr`` store them.

    Raises
    ------
    CanopyError
        Any of its subclasses, with a sentence saying what to fix; nothing is left at ``out``.
    """
    if isinstance(imagery, PredictRequest):
        if bbox is not None or options:
            raise RequestError("canopy.predict takes a PredictRequest alone; put bbox and the other options in the request.")
        request = imagery
    else:
        request = PredictRequest.from_options(imagery, bbox, **options)
    calls = {"client": client, "progress": progress, "download_progress": download_progress, "cluster_started": cluster_started}
    target = request.output.path
    if target is not None:
        summary = _execute(request, **calls)
        result = with_companions(open_map(target), target)
    else:
        distributed = client is not None or request.runtime.cluster.distributed
        with tempfile.TemporaryDirectory(prefix="canopy-", dir=os.environ.get("CANOPY_SCRATCH") if distributed else None) as tmp:
            summary = _execute(replace(request, output=replace(request.output, path=Path(tmp) / "height.tif",
                                                                resume=False, quicklook=False)), **calls)
            with open_map(Path(tmp) / "height.tif") as data:
                result = with_companions(data, Path(tmp) / "height.tif").load()
    result.attrs.update(summary.to_attrs())
    return result


def predict_to_file(
    request: PredictRequest,
    *,
    client: Any = None,
    progress: Callable[[Progress], None] | None = None,
    download_progress: ProgressCallback | None = None,
    cluster_started: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run a request whose output is a file, and say what the run did: :func:`predict` without reading the map back.

    Parameters
    ----------
    request
        A request with an output path (``out``).
    client, progress, download_progress, cluster_started
        As :func:`predict`.

    Returns
    -------
    RunSummary

    Raises
    ------
    RequestError
        If the request has no output path.
    CanopyError
        As :func:`predict`.

    .. versionadded:: 0.3.0
    """
    if request.output.path is None:
        raise RequestError("canopy.predict_to_file needs a request with an output path; pass out=... (or use canopy.predict).")
    return _execute(request, client=client, progress=progress, download_progress=download_progress, cluster_started=cluster_started)


def _execute(request: PredictRequest, *, client, progress, download_progress, cluster_started) -> RunSummary:
    """Plan a request with an output path, connect to its cluster if it names one, and run it (two calls below the user's)."""
    with ExitStack() as stack:
        stack.enter_context(run_env())
        plan = stack.enter_context(make_plan(request, download_progress))
        _warn_if_large(plan)
        client = stack.enter_context(client_for(client, request.runtime.cluster, cluster_started))
        engine = _engine(plan, client, download_progress)
        stack.callback(engine.close)
        return _run(plan, engine, request.output.path, request.output.resume, request.output.quicklook, progress)


LARGE_KM2 = 25.0
"""Regions larger than this are announced before the run starts."""


def _warn_if_large(plan: RunPlan) -> None:
    """Say before starting that a region is large: its area, grid and blocks, and where the time estimate shows."""
    grid = plan.grid
    km2 = grid.width * grid.height * grid.res**2 / 1e6
    if km2 <= LARGE_KM2:
        return
    blocks = len(plan.blocks())
    warn(
        f"The region is {km2:,.1f} km² ({grid.width:,} x {grid.height:,} px of {grid.res:g} m, {blocks:,} blocks): a long run; "
        "the progress bar shows the time left once the first blocks are done. Limit it with --bbox if that is not what "
        "you meant; areas without imagery cost no model time.",
        LargeRegionWarning,
    )


def _engine(plan: RunPlan, client: Any, download_progress: ProgressCallback | None):
    """Where blocks are computed: on the Dask cluster of ``client``, or in this process."""
    if client is None:
        return LocalEngine(plan, download_progress)
    from canopy.runtime.distributed import DaskEngine

    return DaskEngine(plan, client)


_BOUNDS_KEPT = 4
"""Blocks whose interval is kept once computed: each of a block's tiles, in both COGs, reads it (a block of 2048 px
under 16 tiles), while tiles are compressed about block by block."""


def _companion_layers(plan: RunPlan, partial: PartialRun, tags: dict[str, str]):
    """The rasters a run writes beside its heights, as (kind, block reader, band, tags): the uncertainty
    (``--uncertainty``) and the calibration's interval (lower, upper), computed from each stored block once."""
    layers = []
    if plan.uncertainty:
        layers.append((UNCERTAINTY, partial.view_spread, UNCERTAINTY_BAND, {**tags, "canopy_layer": UNCERTAINTY}))
    interval = plan.interval
    if interval is not None:
        spread = partial.view_spread if interval.scaled else lambda block: None

        @functools.lru_cache(maxsize=_BOUNDS_KEPT)
        def bounds(block: Block) -> tuple[np.ndarray, np.ndarray]:
            return interval.bounds(partial.view(block), spread(block))

        for side, kind in enumerate((LOWER, UPPER)):
            def read(block: Block, side: int = side) -> np.ndarray:
                return bounds(block)[side]

            layers.append((kind, read, interval_band(kind, interval.level),
                           {**tags, "canopy_layer": kind, "canopy_interval_level": f"{interval.level:g}"}))
    return layers


def _write_layers(layers, quicklook: Callable[[Path, float], None] | None) -> None:
    """Write each layer's COG and QGIS style (the interval's share the heights' colour-ramp top) and the ``quicklook``
    (from the heights' file before it lands, and its ramp's top), the heights last: the run's output is whole once
    they are there; then remove the companions an earlier run left that this one does not write."""
    (target, heights, tags), *companions = layers
    stale = set(existing_companions(target).values()) - {path for path, _, _ in companions}
    with atomic_path(target) as tmp_heights:
        vmax = style_range(height_percentile(heights.finish(tmp_heights, tags), 98))
        for path, cog, layer_tags in companions:
            with atomic_path(path) as tmp:
                counts = cog.finish(tmp, layer_tags)
            if layer_tags["canopy_layer"] == UNCERTAINTY:
                write_qml(path.with_suffix(".qml"), uncertainty_range(height_percentile(counts, 98)), uncertainty_qml)
            else:
                write_qml(path.with_suffix(".qml"), vmax)
        write_qml(target.with_suffix(".qml"), vmax)
        if quicklook is not None:
            quicklook(tmp_heights, vmax)
    for path in stale:
        path.unlink()
        path.with_suffix(".qml").unlink(missing_ok=True)


def _run(plan: RunPlan, engine, target: Path, resume: bool, quicklook: bool, progress: Callable[[Progress], None] | None) -> RunSummary:
    """Compute every block not already done, then assemble the COG and its sidecars atomically."""
    with output_lock(target, [companion(target, kind) for kind in KINDS]):
        return _run_locked(plan, engine, target, resume, quicklook, progress)


def _run_locked(plan: RunPlan, engine, target: Path, resume: bool, quicklook: bool, progress: Callable[[Progress], None] | None) -> RunSummary:
    """:func:`_run` while this process holds the output's lock."""
    grid, layout = plan.grid, plan.layout
    tags = plan.tags(engine.identity)
    if plan.calibration is not None:
        plan.calibration.check_for(map_identity(tags), f"this run's model {tags['canopy_model']}")
    partial = PartialRun(target, plan.fingerprint(engine.identity), resume, AGREEMENT_BOUND_M[engine.identity.precision])
    blocks = plan.blocks()
    done = partial.done()
    todo = [b for b in blocks if b.key not in done]

    def km2(some: list[Block]) -> float:
        return sum(b.height * b.width for b in some) * grid.res**2 / 1e6

    reused_km2, todo_km2, total_km2 = km2([b for b in blocks if b.key in done]), km2(todo), km2(blocks)
    chips_total = sum(len(layout.starts_within(b.row, b.row + b.height, grid.height))
                      * len(layout.starts_within(b.col, b.col + b.width, grid.width)) for b in todo)
    state = {"count": len(blocks) - len(todo), "km2": reused_km2, "chips": 0}

    def report() -> None:
        if progress is not None:
            by_chips = reused_km2 + todo_km2 * min(1.0, state["chips"] / chips_total) if chips_total else 0.0
            progress(Progress(state["count"], len(blocks), max(state["km2"], by_chips), total_km2, state["chips"]))

    def on_chips(count: int) -> None:
        state["chips"] += count
        report()

    with ExitStack() as stack:
        layers = [(target, stack.enter_context(StreamingCog(grid, blocks, plan.block_size, partial.view, partial.dir)), tags)]
        for kind, read, band, layer_tags in _companion_layers(plan, partial, tags):
            cog = StreamingCog(grid, blocks, plan.block_size, read, partial.dir, band=band, name=kind)
            layers.append((companion(target, kind), stack.enter_context(cog), layer_tags))

        def on_done(block: Block) -> None:
            state["count"] += 1
            state["km2"] += km2([block])
            for _, cog, _ in layers:
                cog.block_done(block)
            report()

        for block in blocks:
            if block.key in done:
                for _, cog, _ in layers:
                    cog.block_done(block)
        report()
        chips = engine.run(partial, todo, on_done, on_chips)
        title = f"{target.name} ({plan.model.spec.name})"
        _write_layers(layers, (lambda tif, vmax: write_quicklook(tif, target.with_suffix(".png"), vmax, title=title))
                      if quicklook else None)
    partial.remove()
    area = sum(b.height * b.width for b in todo)
    per_pixel = chips * layout.size**2 / area if area else 0.0
    summary = RunSummary(len(todo), len(blocks) - len(todo), chips, layout.size, layout.overlap, plan.block_size, per_pixel,
                         grid.width, grid.height, grid.res, grid.crs.to_string())
    log.info("computed %d blocks, reused %d; %d chips, %.2f chip px per output px", summary.blocks_computed,
             summary.blocks_reused, summary.chips, per_pixel)
    return summary
