"""The run plan: a request resolved against its imagery (grid, sources, radiometry), plain and picklable,
so that this process or any Dask worker can compute any block of it the same way."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.crs import CRS

from canopy._version import __version__
from canopy.calibration import Calibration, PredictionInterval
from canopy.choices import Device, Normalize, Precision
from canopy.errors import ResolutionWarning, warn
from canopy.grid import Block, OutputGrid, iter_blocks, plan_grid
from canopy.imagery.aerial_normalization import region_affine
from canopy.imagery.discover import open_imagery
from canopy.imagery.radiometry import describe_scalings, scaling_for_region
from canopy.imagery.source import ImagerySource
from canopy.imagery.source_set import SourceSet
from canopy.models.aerial_normalizer import load_normalizer
from canopy.models.height_model import ModelRef
from canopy.models.registry import ModelSpec
from canopy.models.weights import ProgressCallback
from canopy.request import PredictRequest
from canopy.tiling.chips import ChipLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights ran, in what precision on what kind of device, with what numerics: what a map's tags record.

    ``numerics`` (:func:`~canopy.runtime.numerics.numerics_tag`) is what the last bits depend on
    beyond the request: maps that differ in it agree within a bound, not byte for byte.
    """

    backbone_weights: str
    head_weights: str
    precision: str
    device: str
    numerics: str


@dataclass(frozen=True)
class RunPlan:
    """Everything that decides a run's pixels, resolved once by :func:`make_plan`.

    ``input_affine`` is the region's aerial normalisation (gain, offset per band), folded into the
    model's input normalisation wherever it is loaded; None without ``--normalize aerial``.
    ``calibration`` maps the blended heights (``--calibration``). ``uncertainty`` blends each pixel's
    spread too (``--uncertainty``), ``tta`` predicts every chip under four flips. ``sources`` are open in the
    process that made the plan, and opened once in any other that reads them; closing the plan
    (or leaving its ``with`` block) closes them.
    """

    sources: SourceSet
    grid: OutputGrid
    layout: ChipLayout
    block_size: int
    model: ModelRef
    device: Device
    precision: Precision
    batch_size: int | None
    offline: bool | None
    input_affine: tuple[tuple[float, ...], tuple[float, ...]] | None
    radiometry: str
    calibration: Calibration | None = None
    uncertainty: bool = False
    tta: bool = False

    @property
    def interval(self) -> PredictionInterval | None:
        """The calibration's prediction interval, written beside the heights; None without one."""
        return None if self.calibration is None else self.calibration.interval

    def blocks(self) -> list[Block]:
        """The grid's lattice-aligned blocks, row by row."""
        return iter_blocks(self.grid.height, self.grid.width, self.block_size)

    def tags(self, identity: ModelIdentity) -> dict[str, str]:
        """The GeoTIFF tags that record how the map was made."""
        spec = self.model.spec
        names = self.sources.names
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return {
            "canopy_model": spec.name,
            "canopy_weights": identity.backbone_weights,
            "canopy_head_weights": identity.head_weights,
            "canopy_version": __version__,
            "canopy_chip_size": str(self.layout.size),
            "canopy_overlap": str(self.layout.overlap),
            "canopy_normalization": f"mean={list(spec.normalization.mean)} std={list(spec.normalization.std)} on RGB/255",
            "canopy_precision": identity.precision,
            "canopy_numerics": identity.numerics,
            "canopy_radiometry": self.radiometry,
            "canopy_imagery": listed,
            **({"canopy_imagery_date": taken} if (taken := self.sources.taken) else {}),
            **({"canopy_calibration": self.calibration.digest} if self.calibration is not None else {}),
            **({"canopy_tta": TTA_TAG} if self.tta else {}),
            **({"canopy_uncertainty": uncertainty_tag(spec, self.tta)} if self.uncertainty else {}),
            "units": "m",
        }

    def fingerprint(self, identity: ModelIdentity) -> dict:
        """The tags plus what else a resumed run must share with the one it continues (``canopy_numerics`` may differ, with a warning)."""
        grid = self.grid
        return {
            **self.tags(identity),
            "grid": [grid.crs.to_wkt(), grid.res, grid.left, grid.top, grid.width, grid.height],
            "block_size": self.block_size,
            "device": identity.device,
            "imagery": self.sources.fingerprints,
        }

    def close(self) -> None:
        """Close the sources this process opened for the plan."""
        self.sources.close()

    def __enter__(self) -> RunPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


TTA_TAG = "mean of 4 flips: none, left-right, up-down, both"


def uncertainty_tag(spec: ModelSpec, tta: bool) -> str:
    """What a map's uncertainty is, as its ``canopy_uncertainty`` tag says: which spreads it holds."""
    parts = (["the head's height bins"] if spec.head.type == "dpt-bins" else []) + ["the overlapping chips"]
    parts += ["4 flips"] if tta else []
    return f"standard deviation (m) of the blended predictions over {', '.join(parts)}"


def make_plan(request: PredictRequest, download_progress: ProgressCallback | None = None) -> RunPlan:
    """Resolve a request against its imagery: open it, plan the output grid, fix the radiometry.

    Sources are opened and checked here, once: the plan keeps them open for this process and plain
    records of them for others (Dask workers), which open them again without checking again.

    Parameters
    ----------
    request
        The validated request.
    download_progress
        Called while the aerial normalisation network downloads.

    Returns
    -------
    RunPlan
        Holding its sources open: close it, or use it as a context manager.

    Raises
    ------
    CanopyError
        The subclass naming what is wrong with the imagery or the region; nothing is left open.
    """
    spec = request.model.spec
    region = request.region
    sources = open_imagery(list(request.imagery.sources), region.to(CRS.from_epsg(4326)) if region else None,
                           request.imagery.options)
    try:
        opened = sources.open()
        grid = plan_grid([(s.crs, s.bounds) for s in opened], region, request.output.res or spec.ground_resolution,
                         request.output.crs)
        scaling = scaling_for_region(opened, grid)
        radiometry = describe_scalings([s.scaling or scaling for s in opened])
        _warn_about_resolution(spec, opened)
        sources = sources.with_scaling(scaling)
        affine = None
        if request.imagery.normalize == Normalize.AERIAL:
            affine, described = _aerial_affine(request, sources.open(), grid, download_progress)
            radiometry += described
        calibration = None if request.calibration is None else Calibration.read(request.calibration)
        uncertainty = request.output.uncertainty or _interval_needs_uncertainty(calibration, spec, request.output.tta)
    except BaseException:
        sources.close()
        raise
    log.info("output grid: %d x %d px of %g m in %s", grid.width, grid.height, grid.res, grid.crs.to_string())
    runtime = request.runtime
    return RunPlan(sources, grid, request.layout, request.layout.block_size(request.output.block_size), request.model,
                   runtime.device, runtime.precision, runtime.batch_size, runtime.offline, affine, radiometry, calibration,
                   uncertainty, request.output.tta)


def _interval_needs_uncertainty(calibration: Calibration | None, spec: ModelSpec, tta: bool) -> bool:
    """Whether the calibration's interval scales with an uncertainty (then the run computes it), refusing one fitted on
    another kind of uncertainty than this run's."""
    interval = None if calibration is None else calibration.interval
    if interval is None or not interval.scaled:
        return False
    interval.check_uncertainty({"canopy_uncertainty": uncertainty_tag(spec, tta)}, "this run")
    log.info("computing the uncertainty the calibration's interval scales with")
    return True


def _aerial_affine(request: PredictRequest, sources: Sequence[ImagerySource], grid: OutputGrid, progress) -> tuple:
    """The region's aerial normalisation as (gain, offset) tuples, and what to add to the radiometry tag."""
    network = load_normalizer(request.imagery.normalizer_weights, offline=request.runtime.offline, progress=progress)
    gain, offset = region_affine(network, sources, grid)
    log.info("aerial normalisation: gain %s, offset %s", gain, offset)
    described = f"; aerial normalisation for the region: rgb * {np.round(gain, 4).tolist()} + {np.round(offset, 4).tolist()}"
    return (tuple(float(v) for v in gain), tuple(float(v) for v in offset)), described


def _warn_about_resolution(spec: ModelSpec, sources: Sequence[ImagerySource]) -> None:
    """Say what to expect when imagery is far from the resolution the model was trained on."""
    if spec.resolution_range is None:
        return
    low, high = spec.resolution_range
    for source in sources:
        if source.crs.is_projected and not low <= source.res <= high:
            side = "finer" if source.res < low else "coarser"
            warn(
                f"Imagery {source.name} is at {source.res:g} m, {side} than the {low:g}-{high:g} m that {spec.name} "
                f"was made for (it is resampled to {spec.ground_resolution:g} m): expect less accurate heights, "
                "particularly for small or sparse trees.",
                ResolutionWarning,
            )
