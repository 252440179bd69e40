"""A GeoTIFF (or any GDAL raster, local or a remote COG) read window by window onto the output grid.

What is decided about a raster once, when it is first opened, is in :mod:`canopy.imagery.raster_checks`;
this module reads it.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from scipy.ndimage import binary_fill_holes

from canopy.errors import ImageryError, ImageryReadError
from canopy.grid import BBox, OutputGrid, intersects, to_crs
from canopy.imagery.radiometry import Scaling
from canopy.imagery.raster_checks import (
    check_raster,
    check_vrt_sources,
    decide_nodata_rule,
    driver_for,
    file_fingerprint,
    frozen,
    gdal_message,
    is_remote,
    local_path,
    select_bands,
    tiff_datetime,
)
from canopy.imagery.source import Patch
from canopy.io.gdal_env import remote_env

# Output pixels this many times coarser than the source are averaged; finer ratios are bilinear.
_AVERAGE_FROM = 1.5
_FRAME_MARGIN = 2
"""Pixels of the output lattice added around a raster's footprint in its frame (see ``GeoTiffSource._frame``)."""
_MAX_ENCLOSURE_PIXELS = 2**28  # a collar raster's frame up to this size has its enclosed 255s found once, whole
_OPEN_FRAMES = 4  # warped views kept open per raster: nearest and smooth for the run's grid, and the sample grid's


@dataclass(frozen=True)
class RasterRef:
    """A plain, picklable record of an opened raster: enough to open it again, elsewhere, without re-deciding anything.

    A single raster has a ``path`` (a file or URL); a mosaic of aligned tiles has ``vrt``, the VRT
    document joining them, instead. ``nodata_rule`` is what :class:`GeoTiffSource` decided about a
    declared nodata of 255 (``collar``: masked where connected to the collar; ``data``: read as
    data; ``plain``: nodata as declared), so a process that opens the raster again neither
    re-reads its edges nor warns again; and the truncated-file check is not repeated either, as the
    raster was checked when the record was made (``fingerprint`` notices a file changed since).
    """

    path: str | None
    bands: tuple[int, int, int]
    date: float
    name: str
    scaling: Scaling | None
    nodata_rule: str
    fingerprint: tuple
    taken: str | None = None
    vrt: str | None = None

    def open(self) -> GeoTiffSource:
        """The raster opened again (a context manager that closes it).

        Raises
        ------
        ImageryReadError
            If it cannot be opened, or a local file changed since the record was made.
        ImageryError
            As :class:`GeoTiffSource`.
        """
        return GeoTiffSource.from_ref(self)


def _phase(coordinate: float, res: float) -> float:
    """Where a lattice of pixel size ``res`` through ``coordinate`` crosses zero: 0 for target-aligned grids.

    Rounding noise (a coordinate that is a whole multiple of ``res`` up to the last bits) counts as 0,
    so every window of an aligned grid gets the same phase.
    """
    phase = math.remainder(coordinate, res)
    return 0.0 if abs(phase) < 1e-6 * res else phase


def _frame_key(frame: OutputGrid) -> tuple:
    """What tells frames apart, for the views and answers kept per frame."""
    return (frame.crs.to_wkt(), frame.res, frame.left, frame.top, frame.width, frame.height)


def _within(frame: OutputGrid, row: int, col: int, grid: OutputGrid) -> tuple[int, int, int, int]:
    """The rows and columns (r0, c0, r1, c1) of ``frame`` that ``grid``, starting at (row, col) in it, covers."""
    return max(row, 0), max(col, 0), min(row + grid.height, frame.height), min(col + grid.width, frame.width)


class GeoTiffSource:
    """One georeferenced raster with at least three bands.

    Opening checks what can be checked before any work is done: that the file is a raster, is
    georeferenced, has the bands asked for, and that its last block can be read (a truncated file
    fails here, not half-way through a run). Remote rasters (http(s) URLs) are read by windows
    through GDAL's range requests, never downloaded whole.

    Parameters
    ----------
    path
        A raster file or URL; None for a mosaic (``vrt``).
    bands
        1-based band indexes of red, green and blue; default by colour interpretation, else 1, 2, 3.
    date
        When the imagery was taken (POSIX seconds, e.g. a STAC item's ``datetime``), for mosaic
        priority; default the TIFF's ``DATETIME`` tag, else the file's modification time (0 for remote rasters).
    taken
        The imagery's date as ISO 8601 text, ``""`` when not known; default from ``date`` when given,
        else from the TIFF's ``DATETIME``. Maps record it (``canopy_imagery_date``).
    scaling, nodata_rule
        Decided for this raster already (from its :class:`RasterRef`); default decided here.
    members
        The fingerprints of a mosaic's tiles, its own fingerprint.
    vrt
        A VRT document to open instead of ``path`` (a mosaic of tiles).
    fingerprint
        The fingerprint of an earlier open of this raster (its own from then on): its last block is
        not read again, and a local file whose size or modification time differs is refused.

    Raises
    ------
    ImageryReadError
        If the file is missing, not a raster, unreachable or truncated.
    ImageryError
        If it has no CRS or geotransform, or not the bands asked for.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        bands: Sequence[int] | None = None,
        date: float | None = None,
        name: str | None = None,
        *,
        scaling: Scaling | None = None,
        nodata_rule: str | None = None,
        members: Sequence = (),
        taken: str | None = None,
        vrt: str | None = None,
        fingerprint: tuple | None = None,
    ) -> None:
        path = None if path is None else local_path(path)
        self.remote = path is not None and is_remote(path)
        self.path: str | Path | None = str(path) if self.remote else None if path is None else Path(path)
        self.name = name or str(path).rstrip("/").rsplit("/", 1)[-1]
        self.label = str(self.path) if self.path is not None else self.name  # what messages call the raster
        driver = "VRT" if vrt is not None else driver_for(str(path))
        if isinstance(self.path, Path):
            if not self.path.exists():
                raise ImageryReadError(f"Imagery {self.label} does not exist; check the path.")
            self.path = self.path.resolve()  # absolute, as other processes (Dask workers, VRT mosaics) need it
            self.label = str(self.path)
            if fingerprint is not None and list(fingerprint) != file_fingerprint(self.path):
                raise ImageryReadError(f"Imagery {self.label} changed since the run was planned; run it again.")
            if driver == "VRT" and fingerprint is None:
                check_vrt_sources(self.path)
        with remote_env(self.remote or vrt is not None):
            self._open(driver, vrt)
            try:
                check_raster(self._ds, self.label, read_last_block=fingerprint is None)
                self.bands = select_bands(self._ds, bands, self.label)
            except BaseException:
                self._ds.close()
                raise
        self.vrt = vrt
        self.crs: CRS = self._ds.crs
        self.bounds: BBox = tuple(self._ds.bounds)
        self.transform = self._ds.transform
        self.width, self.height = self._ds.width, self._ds.height
        self.res: float = float(min(abs(self._ds.res[0]), abs(self._ds.res[1])))
        self.dtype: str = self._ds.dtypes[self.bands[0] - 1]
        tagged = tiff_datetime(self._ds.tags().get("TIFFTAG_DATETIME"))
        if date is None:
            known = tagged.date().isoformat() if tagged else None
            date = tagged.timestamp() if tagged else (self.path.stat().st_mtime if isinstance(self.path, Path) else 0.0)
        else:
            known = datetime.fromtimestamp(date, timezone.utc).date().isoformat()
        self.taken: str | None = known if taken is None else (taken or None)  # "" from a record: not known
        self.date = date
        self.scaling: Scaling | None = scaling or (Scaling.for_uint8() if self.dtype == "uint8" else None)
        self._footprints: dict[str, BBox] = {}
        self._reading = threading.Lock()
        self._vrts: dict[tuple, WarpedVRT] = {}
        self._alignment: dict[tuple, tuple[int, int] | None] = {}
        self._enclosures: dict[tuple, np.ndarray] = {}
        self.nodata_rule = nodata_rule or decide_nodata_rule(self._ds, self.bands, self.name, self.label)
        self.fingerprint: tuple = frozen(fingerprint if fingerprint is not None else members or file_fingerprint(self.path))

    def _open(self, driver: str, vrt: str | None) -> None:
        """Open the dataset with only ``driver`` (a VRT named .tif is refused).

        Raises
        ------
        ImageryReadError
            If GDAL cannot read it.
        """
        try:
            with warnings.catch_warnings():
                # canopy says so itself, in one sentence, if the file is not georeferenced
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(vrt if vrt is not None else self.path, driver=driver)
        except RasterioIOError as exc:
            hint = ("check the URL and that the server answers range requests" if self.remote else
                    f"canopy opens this file only as a {'VRT' if driver == 'VRT' else 'GeoTIFF'}, as its name says")
            kind = "VRT" if driver == "VRT" else "GeoTIFF"
            raise ImageryReadError(f"Imagery {self.label} is not a {kind} GDAL can read ({exc}); {hint}.") from exc

    @classmethod
    def mosaic(cls, vrt: str, name: str, date: float, members: Sequence[GeoTiffSource], taken: str | None) -> GeoTiffSource:
        """One source over a VRT document joining aligned ``members``, which it records by their fingerprints.

        Raises
        ------
        ImageryReadError
            If GDAL cannot open the VRT.
        """
        return cls(None, [1, 2, 3], date, name, vrt=vrt, members=[m.fingerprint for m in members], taken=taken or "")

    @classmethod
    def from_ref(cls, ref: RasterRef) -> GeoTiffSource:
        """Open a raster again from its record, with the scaling and nodata rule it carries, without checking it again.

        Raises
        ------
        ImageryReadError
            If it cannot be opened, or a local file changed since the record was made.
        ImageryError
            As the constructor.
        """
        return cls(ref.path, ref.bands, ref.date, ref.name, scaling=ref.scaling, nodata_rule=ref.nodata_rule,
                   taken=ref.taken or "", vrt=ref.vrt, fingerprint=ref.fingerprint)

    @property
    def ref(self) -> RasterRef:
        """This raster as a :class:`RasterRef`."""
        return RasterRef(None if self.path is None else str(self.path), tuple(self.bands), self.date, self.name, self.scaling,
                         self.nodata_rule, self.fingerprint, self.taken, self.vrt)

    def footprint(self, crs: CRS) -> BBox:
        """Bounds of the raster in ``crs``, computed once per CRS."""
        key = crs.to_wkt()
        if key not in self._footprints:
            self._footprints[key] = to_crs(self.bounds, self.crs, crs)
        return self._footprints[key]

    def _frame(self, grid: OutputGrid) -> tuple[OutputGrid, int, int]:
        """The source's own frame on ``grid``'s pixel lattice, and where ``grid`` starts in it (row, column).

        The frame covers the raster's footprint with a margin, and its origin is computed from the
        footprint, the resolution and the lattice's phase alone, never from ``grid``'s position; so
        every window of the lattice is warped with the same origin and a pixel gets the same value
        whatever window (block, chip, engine) asks for it.
        """
        res = grid.res
        phase_x, phase_y = _phase(grid.left, res), _phase(grid.top, res)
        left, bottom, right, top = self.footprint(grid.crs)
        col0 = math.floor((left - phase_x) / res) - _FRAME_MARGIN
        row0 = math.ceil((top - phase_y) / res) + _FRAME_MARGIN  # counted upwards, in pixels from the phase
        width = math.ceil((right - phase_x) / res) + _FRAME_MARGIN - col0
        height = row0 - (math.floor((bottom - phase_y) / res) - _FRAME_MARGIN)
        frame = OutputGrid(grid.crs, res, phase_x + col0 * res, phase_y + row0 * res, width, height)
        return frame, round((frame.top - grid.top) / res), round((grid.left - frame.left) / res)

    def _warped(self, frame: OutputGrid, resampling: Resampling) -> WarpedVRT:
        """The raster warped onto ``frame``, kept open (the latest few), so GDAL's cache of warped blocks serves neighbouring windows."""
        key = (*_frame_key(frame), resampling)
        if key not in self._vrts:
            while len(self._vrts) >= _OPEN_FRAMES:
                self._vrts.pop(next(iter(self._vrts))).close()
            own_alpha = ColorInterp.alpha in self._ds.colorinterp
            self._vrts[key] = WarpedVRT(
                self._ds,
                crs=frame.crs,
                transform=frame.transform,
                width=frame.width,
                height=frame.height,
                resampling=resampling,
                add_alpha=not own_alpha,
                **({"src_nodata": -1} if self.nodata_rule == "data" else {}),
            )
        return self._vrts[key]

    def _aligned(self, frame: OutputGrid) -> tuple[int, int] | None:
        """Where ``frame`` starts in the raster's own pixels (row, column) when it is the raster's pixel grid (same
        CRS, pixel size and alignment), else None: such a frame is read, not warped."""
        key = _frame_key(frame)
        if key not in self._alignment:
            t, res = self.transform, frame.res
            col, row = (frame.left - t.c) / t.a, (t.f - frame.top) / -t.e
            same = (math.isclose(t.a, res, rel_tol=1e-9) and math.isclose(-t.e, res, rel_tol=1e-9)
                    and abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6 and self.crs == frame.crs)
            self._alignment[key] = (round(row), round(col)) if same else None
        return self._alignment[key]

    def _read_aligned(self, origin: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
        """RGB and a validity band (255 = data) of a window of the raster's own pixels, read without warping."""
        r0, c0 = origin[0] + rows.start, origin[1] + cols.start
        window = Window(c0, r0, cols.stop - cols.start, rows.stop - rows.start)
        out = np.empty((4, window.height, window.width), self.dtype)
        out[:3] = self._ds.read(self.bands, window=window)
        if self.nodata_rule == "data":
            out[3] = 255
        else:
            out[3] = self._ds.dataset_mask(window=window)
        return out

    def _warp(self, grid: OutputGrid, resampling: Resampling) -> np.ndarray:
        """The RGB bands and a validity band (0 = no data) on ``grid``, in the source's data type.

        A raster with its own alpha band keeps it; others get one from their nodata value or mask.
        ``grid`` is read as a window of the source's frame (:meth:`_frame`), so its pixels do not
        depend on where the window starts; a frame that is the raster's own pixel grid is read
        directly, which is what any resampling gives there. One read at a time: a GDAL dataset must
        not be read from two threads at once (a Dask worker runs several blocks' tasks in threads).
        """
        frame, row, col = self._frame(grid)
        out = np.zeros((4, grid.height, grid.width), self.dtype)
        r0, c0, r1, c1 = _within(frame, row, col, grid)
        aligned = self._aligned(frame)
        if aligned is not None:  # the frame may reach past the raster: clip to it
            r0, c0 = max(r0, -aligned[0]), max(c0, -aligned[1])
            r1, c1 = min(r1, self.height - aligned[0]), min(c1, self.width - aligned[1])
        if r1 <= r0 or c1 <= c0:
            return out
        interp = list(self._ds.colorinterp)
        alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else self._ds.count + 1
        with self._reading:
            try:
                if aligned is not None:
                    part = self._read_aligned(aligned, slice(r0, r1), slice(c0, c1))
                else:
                    part = self._warped(frame, resampling).read(indexes=[*self.bands, alpha], window=Window(c0, r0, c1 - c0, r1 - r0))
                out[:, r0 - row : r1 - row, c0 - col : c1 - col] = part
            except RasterioError as exc:
                left, bottom, right, top = to_crs(grid.bounds, grid.crs, self.crs)
                window = self._ds.window(left, bottom, right, top).round_offsets().round_lengths()
                raise ImageryReadError(
                    f"Reading imagery {self.label} failed at its pixels columns {window.col_off}-{window.col_off + window.width - 1}, "
                    f"rows {window.row_off}-{window.row_off + window.height - 1} (GDAL: {gdal_message(exc)}); "
                    "the file may be damaged or unreachable."
                ) from exc
        return out

    def _enclosed(self, grid: OutputGrid, valid: np.ndarray) -> np.ndarray:
        """Invalid pixels of ``grid`` that image data encloses (saturated 255s under the collar rule).

        Whether a pixel of 255 is connected to the collar is a property of the whole raster, so it is
        computed once over the source's frame and cut out for each window; a frame too large for
        that (over ``_MAX_ENCLOSURE_PIXELS``) falls back to the window itself.
        """
        frame, row, col = self._frame(grid)
        if frame.width * frame.height > _MAX_ENCLOSURE_PIXELS:
            return binary_fill_holes(valid) & ~valid
        key = _frame_key(frame)
        if key not in self._enclosures:
            whole = self._warp(frame, Resampling.nearest)[3] > 0
            self._enclosures = {key: np.packbits(binary_fill_holes(whole) & ~whole, axis=1)}
        packed = self._enclosures[key]
        out = np.zeros(grid.shape, bool)
        r0, c0, r1, c1 = _within(frame, row, col, grid)
        if r1 > r0 and c1 > c0:
            out[r0 - row : r1 - row, c0 - col : c1 - col] = np.unpackbits(packed[r0:r1], axis=1, count=frame.width)[:, c0:c1].astype(bool)
        return out

    def read_raw(self, grid: OutputGrid) -> tuple[np.ndarray, np.ndarray]:
        """Band values (3, H, W) in the source's units, as float32, and validity (H, W) on ``grid``.

        A pixel is valid when its centre falls on a valid source pixel (the nodata value, internal
        masks and alpha bands mark invalid ones). Values are averaged when the grid is much coarser
        than the source, bilinear otherwise; where the bilinear kernel reaches past the data edge,
        the nearest source pixel is used, so no valid pixel is left without a value.
        """
        if not intersects(self.footprint(grid.crs), grid.bounds):
            return np.zeros((3, grid.height, grid.width), np.float32), np.zeros(grid.shape, bool)
        nearest = self._warp(grid, Resampling.nearest)
        valid = nearest[3] > 0
        if self.nodata_rule == "collar":
            enclosed = self._enclosed(grid, valid)
            nearest[:3, enclosed] = 255
            valid |= enclosed
        if self._aligned(self._frame(grid)[0]) is not None:
            return nearest[:3].astype(np.float32), valid
        fl, _, fr, _ = self.footprint(grid.crs)
        source_res = (fr - fl) / self._ds.width
        smooth = self._warp(grid, Resampling.average if grid.res / source_res >= _AVERAGE_FROM else Resampling.bilinear)
        values = np.where(smooth[3] > 0, smooth[:3], nearest[:3]).astype(np.float32)
        return values, valid

    def read(self, grid: OutputGrid) -> Patch:
        """RGB scaled to [0, 1] and validity on ``grid``.

        Raises
        ------
        ImageryError
            If the imagery is not 8-bit and was opened without its region-wide scaling.
        """
        if self.scaling is None:
            raise ImageryError(f"Imagery {self.name} is {self.dtype}; open it with the region's scaling (see radiometry) to read it.")
        values, valid = self.read_raw(grid)
        return Patch(self.scaling.apply(values), valid)

    def sample(self, grid: OutputGrid, max_pixels: int = 1_000_000) -> np.ndarray:
        """Valid band values (3, N) over ``grid`` from a decimated read, for region-wide statistics."""
        values, valid = self.read_raw(grid.coarsened(max_pixels))
        return values[:, valid]

    def close(self) -> None:
        """Close the raster and its warped views."""
        for vrt in self._vrts.values():
            vrt.close()
        self._vrts.clear()
        self._ds.close()

    def __enter__(self) -> GeoTiffSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
