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


def test_a_grid_knows_its_transform_bounds_windows_and_coarser_twin():
    from affine import Affine

    from canopy.grid import OutputGrid

    grid = OutputGrid(UTM11, 0.5, 321000.0, 4097000.0, 100, 50)
    assert grid.transform == Affine(0.5, 0.0, 321000.0, 0.0, -0.5, 4097000.0)
    assert grid.bounds == (321000.0, 4096975.0, 321050.0, 4097000.0) and grid.shape == (50, 100)
    window = grid.subgrid(2, 3, 4, 5)  # rows down from the top, columns right from the left
    assert (window.left, window.top, window.shape, window.res) == (321001.5, 4096999.0, (4, 5), 0.5)
    coarse = grid.coarsened(1250)  # 5000 px into 1250: twice as coarse, the same origin
    assert (coarse.res, coarse.shape, coarse.left, coarse.top) == (1.0, (25, 50), 321000.0, 4097000.0)
    assert grid.coarsened(5000) is grid and grid.coarsened(10**6) is grid  # never finer than it is
    thin = OutputGrid(UTM11, 1.0, 0.0, 0.0, 1, 10000).coarsened(100)  # ten times coarser, still one pixel wide
    assert thin.shape == (1000, 1) and thin.res == 10.0
    assert OutputGrid(UTM11, 1.0, 0.0, 0.0, 10000, 1).coarsened(100).shape == (1, 1000)
    for res, width, height in [(0.0, 1, 1), (0.5, 0, 1), (0.5, 1, 0)]:
        with pytest.raises(BBoxError, match="positive resolution and size"):
            OutputGrid(UTM11, res, 0.0, 0.0, width, height)


def test_blocks_cover_the_grid_with_the_remainder_in_the_last_row_and_column():
    from canopy.grid import iter_blocks

    blocks = iter_blocks(10, 7, 4)
    assert [(b.row, b.col, b.height, b.width) for b in blocks] == [
        (0, 0, 4, 4), (0, 4, 4, 3), (4, 0, 4, 4), (4, 4, 4, 3), (8, 0, 2, 4), (8, 4, 2, 3)]
    assert blocks[1].key == "r0_c4"
    with pytest.raises(ValueError, match="block size must be positive, got 0"):
        iter_blocks(10, 7, 0)
    assert len(iter_blocks(3, 2, 1)) == 6


def test_grids_regions_and_blocks_are_fixed_values():
    """Records that travel to Dask workers and key dictionaries: immutable and hashable."""
    from dataclasses import FrozenInstanceError

    from canopy.grid import Block, OutputGrid

    block, grid, region = Block(0, 4, 4, 3), OutputGrid(UTM11, 1.0, 0.0, 0.0, 2, 2), Region((0, 0, 1, 1), WGS84)
    assert {block: 1}[Block(0, 4, 4, 3)] == 1 and hash(grid) == hash(OutputGrid(UTM11, 1.0, 0.0, 0.0, 2, 2))
    for record, field in ((block, "row"), (grid, "res"), (region, "bounds")):
        with pytest.raises(FrozenInstanceError):
            setattr(record, field, 0)
    for bad in [(-1, 0, 1, 1), (0, -1, 1, 1), (0, 0, 0, 1), (0, 0, 1, 0)]:
        with pytest.raises(ValueError, match="non-negative offset and a positive size"):
            Block(*bad)
    assert Block(0, 0, 1, 1).key == "r0_c0"


def test_boxes_that_only_touch_do_not_intersect():
    from canopy.grid import intersects

    assert intersects((0, 0, 2, 2), (1, 1, 3, 3)) and intersects((0, 0, 5, 2), (1, 1, 2, 3))
    assert intersects((0, 0, 5, 1), (2, 0.5, 3, 3))
    assert not intersects((0, 0, 1, 1), (1, 0, 2, 1)) and not intersects((1, 0, 2, 1), (0, 0, 1, 1))
    assert not intersects((0, 0, 1, 1), (0, 1, 1, 2)) and not intersects((0, 1, 1, 2), (0, 0, 1, 1))


@pytest.mark.parametrize(("bbox", "refusal"), [
    ((-180.0, -90.0, 180.0, 90.0), None),  # the whole world: every limit is inclusive
    ((1.0, 0.0, 1.0, 1.0), "has minx >= maxx"),  # an empty box says which axis
    ((10.0, 95.0, 90.5, 100.0), "outside longitude -180..180"),  # swapped would not fit either: longitude 90.5 as a latitude
    ((36.9, 179.5, 37.0, 180.0), "would fit with longitude and latitude swapped"),
    ((-90.0, -180.0, -89.0, -170.0), "would fit with longitude and latitude swapped"),
    ((-180.0001, 0.0, 0.0, 1.0), "outside longitude -180..180"),
    ((0.0, -90.5, 1.0, 0.0), "would fit with longitude and latitude swapped"),
    ((0.0, -180.5, 1.0, 0.0), "outside longitude -180..180"),  # not even swapped
    ((0.0, 0.0, 1.0, 180.5), "outside longitude -180..180"),
    ((0.0, 0.0, 1.0, 90.5), "would fit with longitude and latitude swapped"),
    ((170.0, 0.0, 180.5, 1.0), "outside longitude -180..180"),
    ((-90.5, 95.0, -80.0, 100.0), "outside longitude -180..180"),  # -90.5 cannot be a latitude either
    ((80.0, 95.0, 90.0, 100.0), "would fit with longitude and latitude swapped"),
    ((0.0, 1.0, 1.0, 1.0), "has miny >= maxy"),
])
def test_geographic_bbox_limits(bbox, refusal):
    if refusal is None:
        check_bbox(bbox, WGS84)
    else:
        with pytest.raises(BBoxError, match=refusal):
            check_bbox(bbox, WGS84)


def test_utm_zones_north_south_and_on_the_equator():
    assert utm_crs(-60.0, -30.0) == CRS.from_epsg(32721) and utm_crs(-60.0, 30.0) == CRS.from_epsg(32621)
    assert utm_crs(10.0, 0.0) == CRS.from_epsg(32632)  # the equator belongs to the north
    assert utm_crs(10.0, -0.5) == CRS.from_epsg(32732)
    assert utm_crs(180.0, 10.0) == CRS.from_epsg(32660) and utm_crs(-175.0, 10.0) == CRS.from_epsg(32601)


def test_a_bbox_narrower_than_a_pixel_still_gets_one():
    grid = snap_grid((100.0000001, 200.0000001, 100.0000002, 200.0000002), UTM11, 1.0)
    assert grid.shape == (1, 1) and (grid.left, grid.top) == (100.0, 200.0)  # within the millionth of a pixel snapping forgives


def test_a_bbox_that_is_not_four_numbers_is_refused_whatever_it_holds():
    for bad in ([None, 1, 2, 3], ["a", 1, 2, 3], (1, 2, 3), "1,2,3,inf"):
        with pytest.raises(BBoxError, match="is not four numbers"):
            parse_bbox(bad)


def test_a_projected_bbox_is_never_said_to_have_longitude_and_latitude_swapped():
    left, bottom, right, top = TEAK[1]
    with pytest.raises(BBoxError, match="does not intersect the imagery") as refused:
        plan_grid([TEAK], Region((bottom, left, top, right), UTM11), 0.5)
    assert "swapped" not in str(refused.value)


def test_a_crs_that_is_not_one_is_refused_by_what_it_was_given_for():
    from canopy.grid import parse_crs

    assert parse_crs("EPSG:32611", "--crs") == UTM11 and parse_crs(UTM11, "--crs") is UTM11
    with pytest.raises(BBoxError, match=r"^--crs 'EPSG:999999' is not a coordinate reference system; give e.g. EPSG:4326"):
        parse_crs("EPSG:999999", "--crs")


def test_sources_in_several_crss_map_in_the_utm_zone_whichever_comes_first():
    web_mercator = (CRS.from_epsg(3857), to_crs(TEAK[1], UTM11, CRS.from_epsg(3857)))
    assert plan_grid([web_mercator, TEAK], None, 1.0).crs == UTM11
    assert plan_grid([web_mercator, web_mercator], None, 1.0).crs == CRS.from_epsg(3857)  # one projected CRS is kept


def test_a_swapped_bbox_that_is_valid_either_way_is_recognised_against_the_imagery():
    """Imagery near 10° E, 50° N: a bbox given as lat,lon is a valid lon,lat box elsewhere, and misses it."""
    utm32 = CRS.from_epsg(32632)
    imagery = (utm32, to_crs((9.99, 49.99, 10.01, 50.01), WGS84, utm32))
    with pytest.raises(BBoxError, match="would cover it with longitude and latitude swapped"):
        plan_grid([imagery], Region((49.995, 9.995, 50.005, 60.0), WGS84), 1.0)
