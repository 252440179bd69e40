"""``canopy.evaluate``: a height map against a lidar canopy height model, with the field's metrics.

Definitions (as in the canopy-height literature, e.g. Tolan et al. 2024), over pixels valid in both
rasters on the reference's grid, with d = prediction - reference:

- MAE = mean |d|; RMSE = sqrt(mean d²); bias = mean d;
- R² = 1 - sum d² / sum (reference - mean reference)², the coefficient of determination of the
  prediction as an estimate of the reference (not the squared correlation);
- block R²: the same R² over the means of non-overlapping ``block_size`` x ``block_size`` pixel
  blocks of the reference grid, counting blocks where at least half the pixels are valid;
- per reference height bin (0-5, 5-10, 10-20, 20-30, 30+ m): MAE, bias and pixel count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from canopy.errors import EvaluationError, ImageryReadError
from canopy.grid import intersects
from canopy.io.atomic import atomic_path

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".csv")
HEIGHT_BINS: list[tuple[float, float]] = [(0, 5), (5, 10), (10, 20), (20, 30), (30, math.inf)]


@dataclass(frozen=True)
class BinMetrics:
    """The pixels of one reference height bin: how many, their MAE and bias (None when there are none)."""

    n: int
    mae: float | None
    bias: float | None


@dataclass(frozen=True)
class EvaluationResult:
    """The field's metrics of a map against a reference (definitions in this module's docstring).

    ``r2`` and ``r2_block`` are None when undefined (no spread, fewer than two blocks); ``by_height_bin``
    maps bin names (``0-5``, ..., ``30+``) to :class:`BinMetrics`; ``notes`` are sentences on too few
    blocks or an R² that suggests swapped inputs. ``interval`` is a prediction interval's coverage
    (PICP) and mean width (MPIW), overall and by reference height bin, when one was given.

    .. versionadded:: 0.3
       :func:`evaluate` returned a dict before.
    .. versionchanged:: 0.3.0
       ``interval``.
    """

    mae: float
    rmse: float
    bias: float
    r2: float | None
    r2_block: float | None
    n: int
    reference_std: float
    n_blocks: int
    by_height_bin: dict[str, BinMetrics]
    notes: tuple[str, ...] = ()
    interval: dict | None = None

    def to_dict(self) -> dict:
        """Plain values for JSON."""
        return dataclasses.asdict(self) | {"notes": list(self.notes)}

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON, atomically.

        .. versionadded:: 0.3.0
        """
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))


def bin_name(lo: float, hi: float) -> str:
    """A height bin's name: ``5-10``, or ``30+`` for the open last one."""
    return f"{lo:g}-{hi:g}" if math.isfinite(hi) else f"{lo:g}+"


@dataclass
class _Sums:
    """Running sums from which every metric is computed, so rasters are read in bands of rows."""

    n: int = 0
    sum_d: float = 0.0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    sum_ref: float = 0.0
    sum_ref_sq: float = 0.0
    bins: dict = field(default_factory=lambda: {b: [0, 0.0, 0.0] for b in HEIGHT_BINS})
    block_pred: list = field(default_factory=list)
    block_ref: list = field(default_factory=list)

    def add(self, pred: np.ndarray, ref: np.ndarray, block_size: int) -> None:
        """Add a band of rows (a whole number of blocks high, or the last band)."""
        valid = np.isfinite(pred) & np.isfinite(ref)
        p, r = pred[valid].astype(np.float64), ref[valid].astype(np.float64)
        d = p - r
        self.n += d.size
        self.sum_d += d.sum()
        self.sum_abs += np.abs(d).sum()
        self.sum_sq += (d * d).sum()
        self.sum_ref += r.sum()
        self.sum_ref_sq += (r * r).sum()
        for lo, hi in HEIGHT_BINS:
            in_bin = (r >= lo) & (r < hi)
            entry = self.bins[(lo, hi)]
            entry[0] += int(in_bin.sum())
            entry[1] += float(np.abs(d[in_bin]).sum())
            entry[2] += float(d[in_bin].sum())
        rows, cols = pred.shape
        for top in range(0, rows - block_size + 1, block_size):
            for left in range(0, cols - block_size + 1, block_size):
                part = (slice(top, top + block_size), slice(left, left + block_size))
                ok = valid[part]
                if ok.sum() * 2 >= block_size * block_size:
                    self.block_pred.append(float(pred[part][ok].mean()))
                    self.block_ref.append(float(ref[part][ok].mean()))

    def metrics(self) -> EvaluationResult:
        """The metrics, without notes."""
        n = self.n
        mean_ref = self.sum_ref / n
        ss_tot = self.sum_ref_sq - n * mean_ref * mean_ref
        by_bin = {}
        for (lo, hi), (count, abs_sum, d_sum) in self.bins.items():
            by_bin[bin_name(lo, hi)] = BinMetrics(count, abs_sum / count if count else None, d_sum / count if count else None)
        return EvaluationResult(
            mae=self.sum_abs / n,
            rmse=math.sqrt(self.sum_sq / n),
            bias=self.sum_d / n,
            r2=1.0 - self.sum_sq / ss_tot if ss_tot > 0 else None,
            r2_block=_r2(np.array(self.block_pred), np.array(self.block_ref)),
            n=n,
            reference_std=math.sqrt(max(ss_tot, 0.0) / n),
            n_blocks=len(self.block_ref),
            by_height_bin=by_bin,
        )


def _r2(pred: np.ndarray, ref: np.ndarray) -> float | None:
    """Coefficient of determination of ``pred`` for ``ref``; None with fewer than two values or no spread."""
    if ref.size < 2:
        return None
    ss_tot = float(((ref - ref.mean()) ** 2).sum())
    return 1.0 - float(((pred - ref) ** 2).sum()) / ss_tot if ss_tot > 0 else None


def _open(path: str | os.PathLike, what: str) -> rasterio.DatasetReader:
    """Open a single-band georeferenced raster or say which input is wrong."""
    try:
        ds = rasterio.open(path)
    except RasterioIOError:
        hint = (" (points? pass their height column with --height-column)"
                if Path(path).suffix.lower() in _VECTOR_SUFFIXES else "")
        raise ImageryReadError(f"The {what} {path} is not a raster GDAL can read{hint}; pass a GeoTIFF.") from None
    if ds.count != 1:
        ds.close()
        raise EvaluationError(f"The {what} {path} has {ds.count} bands of {', '.join(sorted(set(ds.dtypes)))}: it looks like "
                              "imagery, not heights; pass a single-band canopy height raster.")
    if ds.crs is None:
        ds.close()
        raise EvaluationError(f"The {what} {path} has no CRS; assign one before evaluating.")
    return ds


def _as_float(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """float32 with NaN wherever the raster's nodata value stands."""
    data = data.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        data[data == nodata] = np.nan
    return data


def _on_grid(pred_ds: rasterio.DatasetReader, shape: tuple[int, int], transform, crs, resampling: Resampling) -> np.ndarray:
    """The prediction reprojected onto a window of the reference grid, NaN where it has no value."""
    pred = np.full(shape, np.nan, np.float32)
    reproject(
        source=rasterio.band(pred_ds, 1),
        destination=pred,
        src_nodata=pred_ds.nodata if pred_ds.nodata is not None else np.nan,
        dst_transform=transform,
        dst_crs=crs,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return pred


def paired_bands(prediction: str | os.PathLike, reference: str | os.PathLike, rows: int = 1000):
    """(prediction, reference) float32 arrays of ``rows`` rows at a time on the reference's grid, as :func:`evaluate`
    pairs them: the prediction averaged when finer, interpolated otherwise; NaN where either has no data.

    Raises
    ------
    EvaluationError, ImageryReadError
        As :func:`evaluate`.
    """
    for (pred,), ref in paired_layers([prediction], reference, rows):
        yield pred, ref


def paired_layers(layers: Sequence[str | os.PathLike], reference: str | os.PathLike, rows: int = 1000):
    """Like :func:`paired_bands` for several rasters on one grid (a map and its companions, :mod:`canopy.io.companions`):
    (a list of their float32 arrays, reference) of ``rows`` rows at a time, each brought onto the reference's grid as
    the first is.

    Raises
    ------
    EvaluationError, ImageryReadError
        As :func:`evaluate`.
    """
    with ExitStack() as stack:
        ref_ds = stack.enter_context(_open(reference, "reference"))
        sources = [stack.enter_context(_open(path, "prediction")) for path in layers]
        pred_ds = sources[0]
        pred_bounds = transform_bounds(pred_ds.crs, ref_ds.crs, *pred_ds.bounds, densify_pts=21)
        if not intersects(pred_bounds, tuple(ref_ds.bounds)):
            raise EvaluationError(
                f"Prediction {layers[0]} and reference {reference} do not overlap; check that they cover the same place."
            )
        finer = abs(pred_ds.res[0]) < abs(ref_ds.res[0]) * 0.75
        resampling = Resampling.average if finer else Resampling.bilinear
        for top in range(0, ref_ds.height, rows):
            window = Window(0, top, ref_ds.width, min(rows, ref_ds.height - top))
            ref = _as_float(ref_ds.read(1, window=window), ref_ds.nodata)
            yield [_on_grid(ds, ref.shape, ref_ds.window_transform(window), ref_ds.crs, resampling) for ds in sources], ref


def _accumulate(prediction: str | os.PathLike | None, reference: str | os.PathLike, sums: _Sums, block_size: int,
                rows_per_read: int, constant: float | None = None, transform=None) -> None:
    """Add one (prediction, reference) pair to ``sums``; with ``constant``, the prediction is that value everywhere;
    ``transform`` maps the prediction's heights first (a calibration)."""
    band = max(block_size, rows_per_read // block_size * block_size)
    if prediction is None:
        with _open(reference, "reference") as ref_ds:
            for top in range(0, ref_ds.height, band):
                window = Window(0, top, ref_ds.width, min(band, ref_ds.height - top))
                ref = _as_float(ref_ds.read(1, window=window), ref_ds.nodata)
                sums.add(np.full(ref.shape, constant, np.float32), ref, block_size)
        return
    for pred, ref in paired_bands(prediction, reference, band):
        sums.add(pred if transform is None else transform(pred), ref, block_size)


def evaluate_pairs(
    pairs: Sequence[tuple[str | os.PathLike | None, str | os.PathLike]],
    block_size: int = 50,
    rows_per_read: int = 1000,
    constant: float | None = None,
    transform=None,
) -> EvaluationResult:
    """Metrics pooled over several (prediction, reference) pairs, as :func:`evaluate` defines them.

    Parameters
    ----------
    pairs
        (prediction, reference) paths; a prediction of None stands for ``constant`` everywhere
        (a baseline such as the training mean).
    block_size, rows_per_read
        As for :func:`evaluate`.
    constant
        The baseline value for pairs without a prediction.
    transform
        Applied to the predictions' heights (float32 arrays) before comparing, e.g. a calibration's ``apply``.

    Returns
    -------
    EvaluationResult
        As :func:`evaluate`.

    Raises
    ------
    EvaluationError, ImageryReadError
        As :func:`evaluate`.
    """
    if block_size < 1:
        raise EvaluationError(f"block size must be at least 1 pixel, got {block_size}.")
    sums = _Sums()
    for prediction, reference in pairs:
        _accumulate(prediction, reference, sums, block_size, rows_per_read, constant, transform)
    if sums.n == 0:
        names = ", ".join(f"{p} vs {r}" for p, r in pairs)
        raise EvaluationError(f"{names}: no pixel is valid in both; check their nodata values and extents.")
    metrics = sums.metrics()
    return dataclasses.replace(metrics, notes=tuple(_notes(metrics, block_size)))


def array_metrics(pairs, block_size: int = 50) -> EvaluationResult | None:
    """The metrics of :func:`evaluate` over (prediction, reference) 2-D arrays on one grid (NaN for no data);
    None when no pixel is valid in both."""
    sums = _Sums()
    for pred, ref in pairs:
        sums.add(pred, ref, block_size)
    return sums.metrics() if sums.n else None


def _notes(metrics: EvaluationResult, block_size: int) -> list[str]:
    """What a reader of the metrics should know: too few blocks for block R², or an R² that points to a mix-up."""
    notes = []
    if metrics.n_blocks < 2:
        suggested = max(2, int(math.sqrt(metrics.n / 10)))
        notes.append(
            f"Block R² needs at least two {block_size} x {block_size} px blocks at least half valid, and the area holds "
            f"{metrics.n_blocks}: lower --block-size (e.g. {suggested}) to get one."
        )
    if metrics.r2 is not None and metrics.r2 < -1:
        spread = f"{metrics.reference_std:.2f} m"
        notes.append(
            f"R² far below 0 means the map is much worse than the reference's own mean everywhere; the reference's "
            f"heights vary by only {spread} (std): check that PREDICTION comes first and the lidar REFERENCE second, "
            "that both are heights in metres, and which model and weights made the map."
            if metrics.reference_std < 1.0 else
            "R² far below 0 means the map is much worse than the reference's own mean everywhere: check that both are "
            "heights in metres over the same place, and which model and weights made the map (random weights give this)."
        )
    return notes


def evaluate(prediction: str | os.PathLike, reference: str | os.PathLike, block_size: int = 50,
             rows_per_read: int = 1000, *, interval=None, points=None) -> EvaluationResult:
    """Compare a canopy height map with a reference canopy height model, or with reference points.

    The prediction is brought onto the reference's grid (averaged when finer, reprojected when the
    CRS differs); pixels that are nodata in either are ignored. Both are read in bands of rows, so
    memory does not grow with the reference's size.

    Parameters
    ----------
    prediction
        Height map in metres (e.g. from ``canopy predict``).
    reference
        Reference canopy height in metres (e.g. from lidar); its grid is the one compared on. With
        ``points``, a vector file of reference points.
    block_size
        Side in reference pixels of the blocks whose means give the block R².
    rows_per_read
        Reference rows read at a time (rounded to whole blocks).
    interval
        Also score a prediction interval: a ``(lower, upper)`` pair of rasters, or a
        :class:`~canopy.calibration.Calibration` (or its file) whose interval is computed from
        ``prediction`` (and its ``<name>.uncertainty.tif``) at the calibration's level.
    points
        A :class:`~canopy.accuracy.point_references.PointReference`: ``reference`` is points, each
        compared with the map's statistic over its footprint (no block R², no interval).

    Returns
    -------
    EvaluationResult
        MAE, RMSE, bias, R², block R² (None when fewer than two blocks), pixels compared, the
        reference's spread, blocks, metrics per reference height bin, notes, and the interval's
        PICP and MPIW; ``to_dict()`` for JSON.

    .. versionchanged:: 0.3
       Returns an :class:`EvaluationResult` instead of a dict.
    .. versionchanged:: 0.3.0
       ``interval`` and ``points``.

    Raises
    ------
    EvaluationError
        If the rasters do not overlap or share no valid pixel, or one has no CRS, or points cannot be read.
    ImageryReadError
        If a file is not a raster.
    CalibrationError
        If the interval's calibration has no interval, or was fitted for another model.
    """
    if points is not None:
        return _evaluate_points(prediction, reference, points)
    metrics = evaluate_pairs([(prediction, reference)], block_size, rows_per_read)
    if interval is None:
        return metrics
    return dataclasses.replace(metrics, interval=_interval_coverage(prediction, reference, interval, rows_per_read))


def _interval_coverage(prediction, reference, interval, rows: int) -> dict:
    """PICP and MPIW of an interval (two rasters, or a calibration's interval around ``prediction``) on the reference's grid."""
    from canopy.calibration import Calibration, map_identity, missing_uncertainty
    from canopy.io.companions import UNCERTAINTY, companion

    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if isinstance(interval, (tuple, list)):
        lower, upper = interval
        level = None
        for (lo, hi), ref in paired_layers([lower, upper], reference, rows):
            parts.append((lo, hi, ref))
    else:
        calibration = interval if isinstance(interval, Calibration) else Calibration.read(interval)
        fitted = calibration.require_interval()
        with rasterio.open(prediction) as src:
            tags = src.tags()
        calibration.check_for(map_identity(tags), f"map {prediction}")
        calibrated = tags.get("canopy_calibration") == calibration.digest
        layers = [prediction, companion(prediction, UNCERTAINTY)] if fitted.scaled else [prediction]
        if fitted.scaled and not layers[1].is_file():
            raise missing_uncertainty(f"map {prediction}", f" beside it ({layers[1].name})")
        fitted.check_uncertainty(tags, f"map {prediction}")
        level = fitted.level
        for bands, ref in paired_layers(layers, reference, rows):
            heights = bands[0] if calibrated else calibration.apply(bands[0])
            parts.append((*fitted.bounds(heights, bands[1] if len(bands) > 1 else None), ref))
    result = coverage(*(np.concatenate([p[k].ravel() for p in parts]) for k in range(3)))
    return {"level": level, **result}


def coverage(lower: np.ndarray, upper: np.ndarray, reference: np.ndarray) -> dict:
    """PICP (the share of reference heights inside ``[lower, upper]``) and MPIW (the interval's mean width, m), over
    pixels valid in all three, overall and by reference height bin (those of :func:`canopy.evaluate`)."""
    valid = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(reference)
    lo, hi, ref = lower[valid], upper[valid], reference[valid]
    inside = (ref >= lo) & (ref <= hi)
    width = hi - lo

    def summary(chosen: np.ndarray) -> dict:
        n = int(chosen.sum())
        return {"n": n, "picp": round(float(inside[chosen].mean()), 4) if n else None,
                "mpiw": round(float(width[chosen].mean()), 4) if n else None}

    return {**summary(np.ones(ref.shape, bool)),
            "by_height_bin": {bin_name(lo_m, hi_m): summary((ref >= lo_m) & (ref < hi_m)) for lo_m, hi_m in HEIGHT_BINS}}


def _evaluate_points(prediction, reference, points) -> EvaluationResult:
    """The metrics of the map's footprint statistics against reference points."""
    from canopy.accuracy.point_references import footprint_pairs

    pairs = footprint_pairs(prediction, reference, points)
    metrics = array_metrics([(pairs.statistic[None], pairs.height[None])], block_size=10**9)
    if metrics is None:
        raise EvaluationError(f"No point of {reference} has a footprint at least half covered by {prediction}; check that "
                              "they cover the same place.")
    note = f"Points: {points.describe()}; block R² does not apply to points."
    return dataclasses.replace(metrics, notes=(note, *_notes(metrics, 1)[1:]))


def format_table(metrics: EvaluationResult) -> str:
    """The metrics as a readable plain-text table."""

    def fmt(value: float | None, unit: str = "") -> str:
        return "n/a" if value is None else f"{value:.3f}{unit}"

    lines = [
        f"pixels compared   {metrics.n}",
        f"MAE               {fmt(metrics.mae, ' m')}",
        f"RMSE              {fmt(metrics.rmse, ' m')}",
        f"bias (pred - ref) {fmt(metrics.bias, ' m')}",
        f"R² (pixels)       {fmt(metrics.r2)}",
        f"R² (blocks)       {fmt(metrics.r2_block)}  ({metrics.n_blocks} blocks)",
        "",
        "reference height  pixels     MAE        bias",
    ]
    for name, row in metrics.by_height_bin.items():
        lines.append(f"{name + ' m':<17} {row.n:<10} {fmt(row.mae, ' m'):<10} {fmt(row.bias, ' m')}")
    if metrics.interval is not None:
        interval = metrics.interval
        level = "" if interval["level"] is None else f" ({interval['level']:.0%})"
        lines += ["", f"prediction interval{level}: PICP (share of reference inside) and MPIW (mean width)",
                  "reference height  pixels     PICP       MPIW",
                  f"{'all':<17} {interval['n']:<10} {fmt(interval['picp']):<10} {fmt(interval['mpiw'], ' m')}"]
        for name, row in interval["by_height_bin"].items():
            lines.append(f"{name + ' m':<17} {row['n']:<10} {fmt(row['picp']):<10} {fmt(row['mpiw'], ' m')}")
    lines += [f"\nnote: {note}" for note in metrics.notes]
    return "\n".join(lines)


def write_scatter(pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], metrics: EvaluationResult, png: Path, title: str | None = None) -> None:
    """A density scatter of prediction against reference with the 1:1 line and the metrics.

    Parameters
    ----------
    pairs
        The (prediction, reference) rasters compared; predictions are put on the references' grids
        as in :func:`evaluate`.
    metrics
        What :func:`evaluate` returned, printed on the plot.
    png
        Where to write the picture (atomically).
    title
        Shown above the plot.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is left alone

    values = [_paired_values(p, r) for p, r in pairs]
    pred_values = np.concatenate([v[0] for v in values])
    ref_values = np.concatenate([v[1] for v in values])
    top = float(max(5.0, np.nanpercentile(np.concatenate([pred_values, ref_values]), 99.5)))
    fig = Figure(figsize=(5.5, 5), dpi=100)
    ax = fig.subplots()
    counts = ax.hexbin(ref_values, pred_values, gridsize=40, extent=(0, top, 0, top), mincnt=1, bins="log", cmap="viridis")
    ax.plot([0, top], [0, top], color="#d62728", lw=1, label="1:1")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("reference canopy height (m)")
    ax.set_ylabel("predicted canopy height (m)")
    ax.set_title(title or "prediction vs reference")
    r2 = "n/a" if metrics.r2 is None else f"{metrics.r2:.2f}"
    ax.text(0.03, 0.97, f"MAE {metrics.mae:.2f} m\nRMSE {metrics.rmse:.2f} m\nbias {metrics.bias:+.2f} m\nR² {r2}\nn {metrics.n}",
            transform=ax.transAxes, va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    ax.legend(loc="lower right")
    fig.colorbar(counts, ax=ax, label="pixels")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")


def _paired_values(prediction: str | os.PathLike, reference: str | os.PathLike, limit: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` (prediction, reference) pairs on the reference grid, evenly subsampled, for plotting."""
    with _open(prediction, "prediction") as pred_ds, _open(reference, "reference") as ref_ds:
        step = max(1, int(math.sqrt(ref_ds.width * ref_ds.height / limit)))
        shape = (max(1, ref_ds.height // step), max(1, ref_ds.width // step))
        ref = _as_float(ref_ds.read(1, out_shape=shape, resampling=Resampling.average), ref_ds.nodata)
        transform = ref_ds.transform * ref_ds.transform.scale(ref_ds.width / shape[1], ref_ds.height / shape[0])
        pred = _on_grid(pred_ds, shape, transform, ref_ds.crs, Resampling.average)
    valid = np.isfinite(pred) & np.isfinite(ref)
    return pred[valid], ref[valid]
