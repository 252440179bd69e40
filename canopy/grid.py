"""The output grid: CRS, resolution, an origin snapped to whole pixels, and the shape covering a bbox.

Bounding boxes are ``minx, miny, maxx, maxy`` (west, south, east, north), the STAC order, in
EPSG:4326 unless another CRS is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds

from canopy.errors import BBoxError

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class OutputGrid:
    """A north-up raster grid: ``width`` x ``height`` square pixels of ``res`` from (``left``, ``top``).

    Pixels are target-aligned: ``left`` and ``top`` are whole multiples of ``res``, so grids of
    neighbouring boxes line up pixel for pixel.
    """

    crs: CRS
    res: float
    left: float
    top: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.res <= 0 or self.width <= 0 or self.height <= 0:
            raise BBoxError(f"An output grid needs a positive resolution and size, got {self}.")

    @property
    def transform(self) -> Affine:
        """The affine transform from (col, row) to (x, y)."""
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)

    @property
    def bounds(self) -> BBox:
        """(left, bottom, right, top) in the grid's CRS."""
        return (self.left, self.top - self.height * self.res, self.left + self.width * self.res, self.top)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    def coarsened(self, max_pixels: int) -> OutputGrid:
        """The same extent at a coarser resolution holding at most ``max_pixels`` pixels (itself when it already does)."""
        scale = max(1.0, (self.width * self.height / max_pixels) ** 0.5)
        if scale == 1.0:
            return self
        return OutputGrid(self.crs, self.res * scale, self.left, self.top, max(1, int(self.width / scale)), max(1, int(self.height / scale)))

    def subgrid(self, row: int, col: int, height: int, width: int) -> OutputGrid:
        """The grid of a window starting at (row, col); it may reach outside this grid."""
        return OutputGrid(
            self.crs, self.res, self.left + col * self.res, self.top - row * self.res, width, height
        )


def parse_bbox(text: str | BBox) -> BBox:
    """Read ``minx,miny,maxx,maxy`` from a string or a sequence of four numbers.

    Raises
    ------
    BBoxError
        If there are not four numbers.
    """
    parts = text.replace(" ", "").split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BBoxError(f"bbox {text!r} is not four numbers; give it as minx,miny,maxx,maxy (west,south,east,north).")
    return values  # type: ignore[return-value]


def parse_crs(value: str | CRS, what: str) -> CRS:
    """Read a CRS given as EPSG code, ``EPSG:n``, WKT or PROJ string.

    Raises
    ------
    BBoxError
        If the text is not a CRS; the message names ``what`` it was given for.
    """
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except CRSError:
        raise BBoxError(f"{what} {value!r} is not a coordinate reference system; give e.g. EPSG:4326 or EPSG:32611.") from None


def check_bbox(bbox: BBox, crs: CRS) -> None:
    """Refuse a bbox whose minimum exceeds its maximum, or geographic coordinates out of range.

    Raises
    ------
    BBoxError
        With a sentence that says which number is wrong, and when lon/lat look swapped, says so.
    """
    minx, miny, maxx, maxy = bbox
    text = ",".join(f"{v:.10g}" for v in bbox)
    if minx >= maxx or miny >= maxy:
        axis = "minx >= maxx" if minx >= maxx else "miny >= maxy"
        raise BBoxError(f"bbox {text} has {axis}; give it as minx,miny,maxx,maxy (west,south,east,north).")
    if crs.is_geographic:
        lat_ok = -90 <= miny and maxy <= 90
        lon_ok = -180 <= minx and maxx <= 180
        if not lat_ok and -90 <= minx and maxx <= 90 and -180 <= miny and maxy <= 180:
            raise BBoxError(
                f"bbox {text} has latitudes outside -90..90 but would fit with longitude and latitude "
                "swapped; give it as minlon,minlat,maxlon,maxlat."
            )
        if not (lat_ok and lon_ok):
            raise BBoxError(f"bbox {text} is outside longitude -180..180 / latitude -90..90; check its numbers and --bbox-crs.")


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone CRS containing a point."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def to_crs(bbox: BBox, src: CRS, dst: CRS) -> BBox:
    """A bbox's bounds in another CRS, densified so curved edges are covered."""
    if src == dst:
        return bbox
    return transform_bounds(src, dst, *bbox, densify_pts=21)


def snap_grid(bounds: BBox, crs: CRS, res: float) -> OutputGrid:
    """The smallest target-aligned grid of ``res`` covering ``bounds`` (in ``crs``).

    Parameters
    ----------
    bounds
        (left, bottom, right, top) in ``crs``.
    crs
        The grid's CRS; must be projected (metres).
    res
        Pixel size in the CRS's units.

    Returns
    -------
    OutputGrid

    Raises
    ------
    BBoxError
        If the CRS is geographic, so a resolution in metres has no meaning.
    """
    if crs.is_geographic:
        raise BBoxError(f"Output CRS {crs.to_string()} is geographic; choose a projected CRS (e.g. a UTM zone) with --crs.")
    left, bottom, right, top = bounds
    # A tolerance of a millionth of a pixel keeps bounds that are already aligned from growing a pixel.
    eps = 1e-6
    col0, col1 = math.floor(left / res + eps), math.ceil(right / res - eps)
    row0, row1 = math.floor(bottom / res + eps), math.ceil(top / res - eps)
    # Origins are whole multiples of res, rounded to the nanometre so 0.1 m grids do not drift.
    x0, y1 = round(col0 * res, 9), round(row1 * res, 9)
    return OutputGrid(crs, res, x0, y1, max(1, col1 - col0), max(1, row1 - row0))


def intersects(a: BBox, b: BBox) -> bool:
    """Whether two (left, bottom, right, top) boxes overlap with positive area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@dataclass(frozen=True)
class Region:
    """A bounding box with its CRS, checked once when made: ``minx, miny, maxx, maxy`` (west, south, east, north).

    Raises
    ------
    BBoxError
        If the minimum exceeds the maximum, or geographic coordinates are out of range or look swapped.
    """

    bounds: BBox
    crs: CRS

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", tuple(float(v) for v in self.bounds))
        check_bbox(self.bounds, self.crs)

    @classmethod
    def parse(cls, bbox: str | BBox, crs: str | CRS = "EPSG:4326") -> Region:
        """A region from ``minx,miny,maxx,maxy`` text or four numbers, and a CRS in any form :func:`parse_crs` reads.

        Raises
        ------
        BBoxError
            If the bbox is not four numbers, is malformed or out of range, or the CRS is not one.
        """
        return cls(parse_bbox(bbox), parse_crs(crs, "--bbox-crs"))

    def to(self, crs: CRS) -> BBox:
        """The region's bounds in ``crs``."""
        return to_crs(self.bounds, self.crs, crs)

    def text(self) -> str:
        """The bounds as ``minx,miny,maxx,maxy`` text."""
        return ",".join(f"{v:.10g}" for v in self.bounds)


def plan_grid(footprints: list[tuple[CRS, BBox]], region: Region | None, res: float, crs: CRS | None = None) -> OutputGrid:
    """The output grid for a request, following the conventions.

    Parameters
    ----------
    footprints
        (CRS, bounds) of each imagery source.
    region
        The region to map; None for the imagery's extent.
    res
        Pixel size in metres.
    crs
        The output CRS; None for the imagery's CRS when all sources share a projected one,
        else the UTM zone of the region's centre.

    Returns
    -------
    OutputGrid
        Target-aligned, covering the whole region (pixels without imagery become nodata).

    Raises
    ------
    BBoxError
        If the region misses the imagery (saying so when lon/lat look swapped).
    """
    wgs84 = CRS.from_epsg(4326)
    region_wgs84 = region.to(wgs84) if region is not None else _union([to_crs(b, c, wgs84) for c, b in footprints])
    if crs is None:
        crss = {c.to_wkt() for c, _ in footprints}
        first = footprints[0][0]
        if len(crss) == 1 and first.is_projected:
            crs = first
        else:
            lon = (region_wgs84[0] + region_wgs84[2]) / 2
            lat = (region_wgs84[1] + region_wgs84[3]) / 2
            crs = utm_crs(lon, lat)
    imagery = _union([to_crs(b, c, crs) for c, b in footprints])
    if region is None:
        return snap_grid(imagery, crs, res)
    bounds = region.to(crs)
    if not intersects(bounds, imagery):
        bbox, bbox_crs = region.bounds, region.crs
        covered = ",".join(f"{v:.10g}" for v in to_crs(imagery, crs, bbox_crs))
        swapped = (bbox[1], bbox[0], bbox[3], bbox[2])
        if bbox_crs.is_geographic and _in_lonlat_range(swapped) and intersects(to_crs(swapped, bbox_crs, crs), imagery):
            raise BBoxError(
                f"bbox {region.text()} misses the imagery but would cover it with longitude and latitude swapped; "
                "give it as minlon,minlat,maxlon,maxlat."
            )
        raise BBoxError(f"bbox {region.text()} does not intersect the imagery, which covers {covered} in {bbox_crs.to_string()}.")
    return snap_grid(bounds, crs, res)


def _in_lonlat_range(bbox: BBox) -> bool:
    """Whether a bbox is ordered and within longitude -180..180, latitude -90..90."""
    minx, miny, maxx, maxy = bbox
    return -180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90


def _union(boxes: list[BBox]) -> BBox:
    """The smallest box containing all ``boxes``."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@dataclass(frozen=True)
class Block:
    """A block, the unit of memory, progress, resume and distribution: rows ``row .. row + height`` and columns ``col .. col + width`` of the output grid."""

    row: int
    col: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.row < 0 or self.col < 0 or self.height <= 0 or self.width <= 0:
            raise ValueError(f"A block needs a non-negative offset and a positive size, got {self}.")

    @property
    def key(self) -> str:
        """A name unique within a grid, used for the block's file in a partial run."""
        return f"r{self.row}_c{self.col}"

    def index(self, block_size: int) -> tuple[int, int]:
        """The block's (row, column) in the grid of blocks of ``block_size``."""
        return self.row // block_size, self.col // block_size


def iter_blocks(height: int, width: int, block_size: int) -> list[Block]:
    """Cut a ``height`` x ``width`` grid into blocks of at most ``block_size`` pixels a side, row by row.

    Parameters
    ----------
    height, width
        The grid's shape in pixels.
    block_size
        The largest side of a block.

    Returns
    -------
    list of Block

    Raises
    ------
    ValueError
        If ``block_size`` is not positive.
    """
    if block_size <= 0:
        raise ValueError(f"block size must be positive, got {block_size}.")
    return [
        Block(row, col, min(block_size, height - row), min(block_size, width - col))
        for row in range(0, height, block_size)
        for col in range(0, width, block_size)
    ]
