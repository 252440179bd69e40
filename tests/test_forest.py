"""Forest / non-forest under the FAO definition: each threshold on hand-made land, blocks equal to the whole, outputs styled."""

from __future__ import annotations

import sqlite3

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from affine import Affine
from click.testing import CliRunner
from forests import synthetic_forest

import canopy
from canopy.analysis.forest import NODATA
from canopy.cli.main import cli
from canopy.errors import HeightMapError

X0, Y0 = 600000.0, 5000000.0


def _land(res: float = 1.0) -> xr.DataArray:
    """400 x 300 m of bare ground (0.3 m) holding, by rows of 100 m:
    - rows 0-100: a 1.44 ha woodland of 10 m trees, 2 x 2 m crowns every 5 m (16 % cover), with a 15 x 15 m
      clearing inside it, and beside it a 120 x 15 m belt (0.18 ha) of closed 12 m canopy (narrower than 20 m);
    - rows 100-200: a 60 x 60 m closed stand (0.36 ha, too small), and 1.44 ha of closed 4 m shrubs (too low);
    - rows 200-300: 1.44 ha with 2 x 2 m crowns every 8 m (6 % cover, too sparse), and a 1.44 ha stand cut by no data."""
    n_rows, n_cols = int(300 / res), int(400 / res)
    y, x = (np.mgrid[0:n_rows, 0:n_cols] + 0.5) * res
    h = np.full((n_rows, n_cols), 0.3, np.float32)
    crowns = lambda spacing: ((x % spacing) < 2) & ((y % spacing) < 2)  # noqa: E731
    woodland = (x >= 10) & (x < 130) & (y >= 10) & (y < 130)
    h[woodland & crowns(5)] = 10.0
    h[(x >= 60) & (x < 75) & (y >= 60) & (y < 75)] = 0.3  # the clearing
    h[(x >= 200) & (x < 320) & (y >= 40) & (y < 55)] = 12.0  # the belt
    h[(x >= 20) & (x < 80) & (y >= 140) & (y < 200)] = 15.0  # the small stand
    h[(x >= 200) & (x < 320) & (y >= 130) & (y < 250)] = 4.0
    h[(y >= 200) & (y < 300) & (x < 130) & crowns(8)] = 10.0
    h[(x >= 200) & (x < 320) & (y >= 260) & (y < 300)] = 20.0  # a stand whose south half is cut by no data
    h[(x >= 200) & (x < 320) & (y >= 280)] = np.nan
    data = xr.DataArray(h, dims=("y", "x"), coords={"y": Y0 - y[:, 0], "x": X0 + x[0]})
    return data.rio.write_crs("EPSG:32633").rio.write_transform(Affine(res, 0, X0, 0, -res, Y0))


def _forest_at(result, x: float, y: float) -> int:
    return int(result.mask.sel(x=X0 + x, y=Y0 - y, method="nearest"))


def test_each_fao_threshold_on_hand_made_land():
    result = canopy.forest(_land())
    assert _forest_at(result, 40, 40) == 1  # the woodland: 16 % cover of 10 m trees over 1.44 ha
    assert _forest_at(result, 67, 67) == 1  # its 15 m clearing stays forest
    assert _forest_at(result, 5, 40) == 0 and _forest_at(result, 140, 40) == 0  # the forest ends at its outermost crowns
    assert _forest_at(result, 260, 47) == 0  # a belt 15 m wide is too narrow
    assert _forest_at(result, 50, 170) == 0  # 0.36 ha is too small
    assert _forest_at(result, 260, 190) == 0  # 4 m shrubs are too low
    assert _forest_at(result, 60, 250) == 0  # 6 % cover is too sparse
    assert result.mask.sel(x=X0 + 260, y=Y0 - 290, method="nearest") == NODATA
    # the crowns span 117 x 117 m (1.37 ha); along the edge the window's cover falls under 10 % a few metres in
    assert len(result.polygons) == 1 and 1.2 < result.polygons.area_ha.iloc[0] < 1.37
    national = canopy.forest(_land(), definition=canopy.ForestDefinition(min_area_ha=0.15, tree_height=3.0, min_width=10.0))
    assert _forest_at(national, 50, 170) == 1 and _forest_at(national, 260, 190) == 1 and _forest_at(national, 260, 47) == 1


def test_a_map_cut_into_blocks_gives_the_forest_of_the_whole_map():
    data = synthetic_forest(size_m=250.0, res=0.5)
    whole = canopy.forest(data, block_size=10_000)
    assert 0.4 < whole.forest_fraction < 0.8
    for block_size in (64, 151):
        parts = canopy.forest(data, block_size=block_size)
        np.testing.assert_array_equal(parts.mask.values, whole.mask.values)
        assert shapely.union_all(parts.polygons.geometry.values).equals(shapely.union_all(whole.polygons.geometry.values))
    land = canopy.forest(_land(), block_size=37)
    np.testing.assert_array_equal(land.mask.values, canopy.forest(_land()).mask.values)


def test_cli_writes_a_styled_mask_and_polygons_and_stats_give_the_forest_fraction(tmp_path):
    chm = tmp_path / "land.tif"
    _land().rio.write_nodata(np.nan, encoded=False).rio.to_raster(chm, dtype="float32")
    out = tmp_path / "forest.gpkg"
    result = CliRunner().invoke(cli, ["forest", str(chm), "--out", str(out), "--block-size", "128"])
    assert result.exit_code == 0, result.output
    assert "1 forest polygons" in result.output
    polygons = gpd.read_file(out, layer="forest")
    assert len(polygons) == 1 and 1.2 < polygons.area_ha.iloc[0] < 1.37
    from rio_cogeo.cogeo import cog_validate

    with rasterio.open(out.with_suffix(".tif")) as src:
        assert src.nodata == NODATA and src.dtypes[0] == "uint8"
    assert cog_validate(str(out.with_suffix(".tif")), strict=True)[0]
    assert 'type="paletted"' in out.with_suffix(".qml").read_text()
    with sqlite3.connect(out) as db:
        assert db.execute("SELECT f_table_name FROM layer_styles WHERE useAsDefault = 1").fetchall() == [("forest",)]
    stands = gpd.GeoDataFrame(geometry=[shapely.box(X0 + 10, Y0 - 130, X0 + 130, Y0 - 10), shapely.box(X0, Y0 - 300, X0 + 200, Y0 - 200)],
                              crs="EPSG:32633")
    table = canopy.zonal_stats(chm, stands, stats=("forest_fraction",))
    mask = canopy.forest(_land()).mask.values[10:130, 10:130]  # the first stand, on whole pixels
    assert table.forest_fraction.iloc[0] == pytest.approx((mask == 1).mean()) and 0.85 < (mask == 1).mean() < 1
    assert table.forest_fraction.iloc[1] == 0.0


def test_maps_too_coarse_for_the_width_are_refused(tmp_path):
    coarse = _land(res=1.0).coarsen(x=20, y=20, boundary="trim").mean()
    coarse = coarse.rio.write_transform(Affine(20, 0, X0, 0, -20, Y0))
    with pytest.raises(HeightMapError, match="20 m pixels"):
        canopy.forest(coarse)
