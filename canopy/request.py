"""``PredictRequest``: one frozen, validated, picklable value that says everything a predict run needs.

The CLI's flags, a ``--config`` YAML file and ``canopy.predict``'s keywords all become a request
through :meth:`PredictRequest.from_options`, the one place option values are checked. Inner code
then takes the request's typed parts: a :class:`~canopy.grid.Region`, the imagery and how to read
it, the model resolved once (:class:`~canopy.models.height_model.ModelRef`), the chip layout, the
output and the runtime, the cluster included.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rasterio.crs import CRS

from canopy.choices import DEFAULT_BLOCK_SIZE, Device, Normalize, Precision
from canopy.cluster import ClusterSpec
from canopy.errors import ChipLayoutError, OutputPathError, RequestError
from canopy.grid import Region, parse_crs
from canopy.imagery.source import ImageryOptions, ImagerySource
from canopy.models.defaults import default_model
from canopy.models.height_model import ModelRef
from canopy.tiling.chips import ChipLayout


def check_output_path(out: str | os.PathLike) -> Path:
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


@dataclass(frozen=True)
class ImagerySpec:
    """The imagery to read, how to find and mosaic it, and how its radiometry is adapted.

    ``sources`` are paths, URLs, folders, globs or STAC locations as text, or
    :class:`~canopy.imagery.ImagerySource` objects (which must be picklable to run on a cluster).
    """

    sources: tuple[str | ImagerySource, ...]
    options: ImageryOptions = ImageryOptions()
    normalize: Normalize = Normalize.NONE
    normalizer_weights: str | None = None

    def __post_init__(self) -> None:
        if not self.sources:
            raise RequestError("No imagery given; pass at least one --imagery GeoTIFF, directory or catalogue.")
        try:
            object.__setattr__(self, "normalize", Normalize(self.normalize))
        except ValueError:
            raise RequestError(f"--normalize {self.normalize!r} is not one of {', '.join(Normalize)}.") from None


@dataclass(frozen=True)
class OutputSpec:
    """Where the map goes and on which grid: path (None keeps it in memory), pixel size, CRS, block side; and what it
    holds beyond heights: ``uncertainty`` (a spread per pixel, :class:`canopy.io.partial.Blended`; ``docs/uncertainty.md``) and ``tta`` (heights as the
    mean of four flips of each chip).

    Raises
    ------
    OutputPathError
        If ``path`` cannot be written.
    RequestError
        If ``res`` or ``block_size`` is not positive, or ``quicklook`` is asked for without a path.
    """

    path: Path | None = None
    res: float | None = None
    crs: CRS | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    resume: bool = False
    quicklook: bool = False
    uncertainty: bool = False
    tta: bool = False

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", check_output_path(self.path))
        if self.res is not None and not self.res > 0:
            raise RequestError(f"--res {self.res} must be a positive pixel size in metres.")
        if self.block_size < 16:
            raise RequestError(f"--block-size {self.block_size} must be at least 16 px.")
        if self.path is None and (self.resume or self.quicklook):
            raise RequestError("--resume and --quicklook need --out, the file they continue or sit beside.")


@dataclass(frozen=True)
class RuntimeSpec:
    """How the model runs: device, precision, chips per call, whether downloads are allowed, and the cluster."""

    device: Device = Device.AUTO
    precision: Precision = Precision.AUTO
    batch_size: int | None = None
    offline: bool | None = None
    cluster: ClusterSpec = field(default_factory=ClusterSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", Device.parse(self.device))
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        if self.batch_size is not None and self.batch_size < 1:
            raise RequestError(f"--batch-size {self.batch_size} must be at least 1.")


@dataclass(frozen=True)
class PredictRequest:
    """Everything a predict run needs, checked once, when made.

    Build one with :meth:`from_options` (keywords as ``canopy.predict`` takes them) or
    :meth:`from_yaml`; :meth:`to_yaml` writes it back. It is plain and picklable, so it can be
    shipped to Dask workers.

    Raises
    ------
    ChipLayoutError
        If the chip layout's patch size is not the model's.
    """

    imagery: ImagerySpec
    model: ModelRef
    layout: ChipLayout
    region: Region | None = None
    output: OutputSpec = OutputSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    calibration: str | None = None

    def __post_init__(self) -> None:
        patch = self.model.spec.backbone.patch_size
        if self.layout.patch != patch:
            raise ChipLayoutError(f"Chip layout {self.layout} is for patch size {self.layout.patch}, not {patch} of model {self.model.spec.name}.")

    @classmethod
    def from_options(
        cls,
        imagery: str | os.PathLike | ImagerySource | Sequence[str | os.PathLike | ImagerySource],
        bbox: str | Sequence[float] | None = None,
        *,
        bbox_crs: str = "EPSG:4326",
        model: str | os.PathLike | ModelRef | None = None,
        weights: str | os.PathLike | None = None,
        out: str | os.PathLike | None = None,
        res: float | None = None,
        crs: str | None = None,
        chip_size: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
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
        workers: int | None = None,
        threads_per_worker: int | None = None,
        scheduler: str | None = None,
        scheduler_file: str | os.PathLike | None = None,
        calibration: str | os.PathLike | None = None,
        uncertainty: bool = False,
        tta: bool = False,
    ) -> PredictRequest:
        """A request from option values as the CLI, a YAML file or Python give them.

        The keywords are :func:`canopy.predict`'s (see there), with the cluster's: ``workers``
        (start a local Dask cluster of that many processes), ``threads_per_worker`` (default:
        cores / workers), ``scheduler`` (``tcp://HOST:PORT`` of an existing cluster) and
        ``scheduler_file``; ``calibration``, a file from ``canopy calibrate`` applied to the heights (with its
        prediction interval written beside them when it has one); ``uncertainty`` and ``tta``.

        Returns
        -------
        PredictRequest

        Raises
        ------
        CanopyError
            The subclass that names what is wrong (bbox, CRS, model, layout, output path,
            device, precision, imagery options, cluster options), before any work is done.
        """
        if isinstance(imagery, (str, os.PathLike, ImagerySource)):
            imagery = [imagery]
        sources = tuple(s if isinstance(s, ImagerySource) else str(s) for s in imagery)
        options = ImageryOptions(tuple(bands) if bands else None, tuple(collections), datetime, asset, mosaic_order)
        runtime = RuntimeSpec(Device.parse(device), Precision.parse(precision), batch_size, offline,
                              ClusterSpec(workers, threads_per_worker, scheduler, None if scheduler_file is None else str(scheduler_file)))
        output = OutputSpec(None if out is None else Path(out), res, None if crs is None else parse_crs(crs, "--crs"),
                            block_size, resume, quicklook, uncertainty, tta)
        region = None if bbox is None else Region.parse(bbox, bbox_crs)
        imagery_spec = ImagerySpec(sources, options, normalize, None if normalizer_weights is None else str(normalizer_weights))
        ref = ModelRef.resolve(default_model() if model is None else model, weights)
        if calibration is not None:
            from canopy.calibration import Calibration

            Calibration.read(calibration)  # a file that is not a calibration is refused before any work
        return cls(imagery_spec, ref, _chip_layout(ref, chip_size, overlap), region, output, runtime,
                   None if calibration is None else str(calibration))

    def to_options(self) -> dict[str, Any]:
        """The request as plain option values (text, numbers, lists) that :meth:`from_options` takes back.

        Raises
        ------
        RequestError
            If the imagery holds source objects, which have no text form.
        """
        objects = [s for s in self.imagery.sources if not isinstance(s, str)]
        if objects:
            raise RequestError(f"Imagery {objects[0]!r} is a source object, not a path or URL; it cannot be written as text.")
        opts, out, run, cluster = self.imagery.options, self.output, self.runtime, self.runtime.cluster
        return {
            "imagery": list(self.imagery.sources),
            "bbox": None if self.region is None else list(self.region.bounds),
            "bbox_crs": "EPSG:4326" if self.region is None else _crs_text(self.region.crs),
            "model": self.model.name,
            "weights": self.model.weights,
            "out": None if out.path is None else str(out.path),
            "res": out.res,
            "crs": None if out.crs is None else _crs_text(out.crs),
            "chip_size": self.layout.size,
            "overlap": self.layout.overlap,
            "batch_size": run.batch_size,
            "block_size": out.block_size,
            "device": run.device.value,
            "precision": run.precision.value,
            "resume": out.resume,
            "quicklook": out.quicklook,
            "offline": run.offline,
            "bands": None if opts.bands is None else list(opts.bands),
            "collections": list(opts.collections),
            "datetime": opts.datetime,
            "asset": opts.asset,
            "mosaic_order": opts.order.value,
            "normalize": self.imagery.normalize.value,
            "normalizer_weights": self.imagery.normalizer_weights,
            "workers": cluster.workers,
            "threads_per_worker": cluster.threads_per_worker,
            "scheduler": cluster.scheduler,
            "scheduler_file": cluster.scheduler_file,
            "calibration": self.calibration,
            "uncertainty": out.uncertainty,
            "tta": out.tta,
        }

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The request as YAML (the keys of :meth:`from_options`, as ``canopy predict --config`` reads them).

        Parameters
        ----------
        path
            Also write it to this file.

        Returns
        -------
        str
        """
        text = yaml.safe_dump(self.to_options(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> PredictRequest:
        """A request from a YAML file of option values, with ``overrides`` winning over the file.

        Raises
        ------
        RequestError
            If the file cannot be read, is not a mapping, or has unknown keys (the message lists the known ones).
        CanopyError
            As :meth:`from_options`.
        """
        values = {**read_option_file(path, OPTION_NAMES), **overrides}
        unknown = sorted(set(overrides) - set(OPTION_NAMES))
        if unknown:
            raise RequestError(f"Options {unknown} are not predict options; known are {sorted(OPTION_NAMES)}.")
        if "imagery" not in values:
            raise RequestError(f"Request file {path} names no imagery; add an imagery: list of paths or URLs.")
        return cls.from_options(**values)


OPTION_NAMES = tuple(inspect.signature(PredictRequest.from_options).parameters)
"""The option names a request is made from: ``canopy.predict``'s keywords, YAML keys and (with dashes) CLI flags."""


def read_option_file(path: str | os.PathLike, known: Sequence[str]) -> dict[str, Any]:
    """The option values of a YAML file (keys with ``-`` or ``_``): the one reader of ``--config`` files and
    :meth:`PredictRequest.from_yaml`.

    Raises
    ------
    RequestError
        If the file cannot be read, is not a mapping, or has keys not in ``known`` (the message lists them).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RequestError(f"Option file {path} cannot be read ({exc}); give a YAML file of option values.") from None
    if not isinstance(data, dict):
        raise RequestError(f"Option file {path} must hold a mapping of option names to values.")
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RequestError(f"Option file {path} has unknown keys {unknown}; known are {sorted(known)}.")
    return values


def _crs_text(crs: CRS) -> str:
    """A CRS as ``EPSG:n`` where it has a code, else WKT."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _chip_layout(ref: ModelRef, chip_size: int | None, overlap: int | None) -> ChipLayout:
    """The chip lattice for a model, refusing sizes that do not fit its patch size."""
    spec = ref.spec
    size = chip_size or spec.chip_size
    try:
        return ChipLayout(size, size // 4 if overlap is None else overlap, spec.backbone.patch_size)
    except ValueError as exc:
        raise ChipLayoutError(f"{exc} Choose --chip-size and --overlap to fit model {spec.name}.") from None

