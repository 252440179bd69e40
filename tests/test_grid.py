"""The output grid: snapping, bbox checks, default CRS, and round trips through CRS transforms."""

from __future__ import annotations

import math

import pytest
from rasterio.crs import CRS

from canopy.errors import BBoxError
from canopy.grid import Region, check_bbox, parse_bbox, plan_grid, snap_grid, to_crs, utm_crs

UTM11 = CRS.from_epsg(32611)
WGS84 = CRS.from_epsg(4326)
TEAK = (UTM11, (321034.5, 4096711.1, 321074.5, 4096751.1))


def test_snap_grid_is_target_aligned_and_covers():
    grid = snap_grid((100.26, 200.1, 130.74, 219.9), UTM11, 0.5)
    assert (grid.left, grid.top) == (100.0, 220.0)
    assert grid.bounds[2] >= 130.74 and grid.bounds[1] <= 200.1
    assert (grid.width, grid.height) == (62, 40)
    assert grid.left / 0.5 == int(grid.left / 0.5)


def test_aligned_bounds_do_not_grow_and_decimal_resolutions_do_not_drift():
    grid = snap_grid(TEAK[1], UTM11, 0.1)
    assert (grid.width, grid.height) == (400, 400)
    assert grid.left == 321034.5 and grid.top == 4096751.1


def test_neighbouring_boxes_line_up_pixel_for_pixel():
    a = snap_grid((1000.3, 2000.2, 1100.7, 2100.1), UTM11, 0.6)
    b = snap_grid((1100.7, 2000.2, 1200.9, 2100.1), UTM11, 0.6)
    offset = (b.left - a.left) / 0.6
    assert abs(offset - round(offset)) < 1e-6
    assert a.top == b.top


def test_parse_and_check_bbox():
    assert parse_bbox("-119.1, 36.9,-119.0,37.0") == (-119.1, 36.9, -119.0, 37.0)
    with pytest.raises(BBoxError, match="not four numbers"):
        parse_bbox("1,2,3")
    with pytest.raises(BBoxError, match="minx >= maxx"):
        check_bbox((2, 0, 1, 1), WGS84)
    with pytest.raises(BBoxError, match="miny >= maxy"):
        check_bbox((0, 2, 1, 1), WGS84)
    with pytest.raises(BBoxError, match="swapped"):
        check_bbox((36.9, -119.1, 37.0, -119.0), WGS84)
    with pytest.raises(BBoxError, match="outside longitude"):
        check_bbox((-200, 0, -190, 1), WGS84)
    check_bbox((321000, 4096000, 322000, 4097000), UTM11)


def test_plan_grid_defaults_to_the_imagery_crs_and_model_resolution():
    lon_lat = to_crs(TEAK[1], UTM11, WGS84)
    grid = plan_grid([TEAK], Region(lon_lat, WGS84), 0.5)
    assert grid.crs == UTM11 and grid.res == 0.5
    left, bottom, right, top = grid.bounds
    assert left <= TEAK[1][0] + 1e-6 and right >= TEAK[1][2] - 1e-6
    assert bottom <= TEAK[1][1] + 1e-6 and top >= TEAK[1][3] - 1e-6


def test_plan_grid_mixed_crs_uses_the_utm_zone_of_the_region():
    other = (CRS.from_epsg(3857), to_crs(TEAK[1], UTM11, CRS.from_epsg(3857)))
    grid = plan_grid([TEAK, other], None, 1.0)
    assert grid.crs == utm_crs(-119.01, 37.0) == UTM11


def test_plan_grid_without_bbox_covers_the_imagery():
    grid = plan_grid([TEAK], None, 0.1)
    assert grid.bounds == pytest.approx(TEAK[1])


def test_plan_grid_refuses_a_miss_and_recognises_swapped_coordinates():
    lon_lat = to_crs(TEAK[1], UTM11, WGS84)
    with pytest.raises(BBoxError, match="does not intersect the imagery, which covers -119.011"):
        plan_grid([TEAK], Region((-118.0, 36.9, -117.9, 37.0), WGS84), 0.5)
    swapped = (lon_lat[1], lon_lat[0], lon_lat[3], lon_lat[2])
    with pytest.raises(BBoxError, match="swapped"):
        plan_grid([TEAK], Region(swapped, WGS84), 0.5)


def test_plan_grid_refuses_a_geographic_output_crs():
    with pytest.raises(BBoxError, match="geographic"):
        plan_grid([TEAK], None, 0.5, crs=WGS84)


def test_grid_round_trips_through_crs_transforms():
    """The grid's bounds, taken to lon/lat and back, still cover the requested box."""
    bbox = (-119.0112, 36.99955, -119.0109, 36.9998)
    grid = plan_grid([TEAK], Region(bbox, WGS84), 0.5)
    back = to_crs(to_crs(grid.bounds, UTM11, WGS84), WGS84, UTM11)
    requested = to_crs(bbox, WGS84, UTM11)
    assert back[0] <= requested[0] + 1e-6 and back[2] >= requested[2] - 1e-6
    assert back[1] <= requested[1] + 1e-6 and back[3] >= requested[3] - 1e-6
    # and no more than one pixel of slack on each side
    for got, want in zip(grid.bounds, requested):
        assert math.isclose(got, want, abs_tol=0.5 + 1e-6)
