"""From heights to biomass: each allometry against a worked example from its published coefficients, the user's own
equations, Monte Carlo uncertainty per tree and for totals, trees with their biomass, per-cell grids against numpy,
and refusals."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

import canopy
from canopy.analysis.allometry import (
    ALLOMETRIES,
    DEFAULT,
    Allometry,
    AllometryError,
    PowerLaw,
    get_allometry,
    total,
    tree_biomass,
)
from canopy.analysis.stand_structure import gap_mask
from canopy.analysis.trees import write_trees
from canopy.cli.main import cli
from forests import synthetic_forest, write_forest
from rasters import NEON

CHM = NEON / "TEAK_049_chm_1m.tif"
H, CD = 25.0, 6.0  # the worked example: a 25 m tree with a 6 m crown, H x CD = 150


def test_jucker_direct_biomass_by_clade_matches_a_hand_computation():
    correction = math.exp(0.204**2 / 2)
    angiosperm = 0.016 * 150**2.013 * correction
    gymnosperm = 0.109 * 150**1.790 * correction
    assert get_allometry("jucker2017-angiosperm").agb_kg(H, CD) == pytest.approx(angiosperm, rel=1e-12)
    assert get_allometry("jucker2017-gymnosperm").agb_kg(H, CD) == pytest.approx(gymnosperm, rel=1e-12)
    assert angiosperm == pytest.approx(392.3, abs=0.1) and gymnosperm == pytest.approx(874.3, abs=0.1)
    dbh = 0.557 * 150**0.809 * math.exp(0.056**2 / 2)
    assert get_allometry("jucker2017-angiosperm").dbh_cm(H, CD) == pytest.approx(dbh, rel=1e-12)
    assert dbh == pytest.approx(32.14, abs=0.01)


def test_dbh_then_chave_matches_a_hand_computation_and_differs_from_the_direct_route_by_about_two():
    dbh = 0.557 * 150**0.809 * math.exp(0.056**2 / 2)
    for density in (0.6, 0.45):
        expected = 0.0673 * (density * dbh**2 * H) ** 0.976
        assert get_allometry(DEFAULT, wood_density=density).agb_kg(H, CD) == pytest.approx(expected, rel=1e-12)
    biome = get_allometry("jucker2017-nearctic-temperate-coniferous-gymnosperm-chave2014", wood_density=0.45)
    dbh_biome = 0.589 * 150**0.817  # no σ in the source for the biome models: no correction
    assert biome.dbh_cm(H, CD) == pytest.approx(dbh_biome, rel=1e-12)
    assert biome.agb_kg(H, CD) == pytest.approx(0.0673 * (0.45 * dbh_biome**2 * H) ** 0.976, rel=1e-12)
    ratio = get_allometry(DEFAULT).agb_kg(H, CD) / get_allometry("jucker2017-angiosperm").agb_kg(H, CD)
    assert 1.8 < ratio < 2.4  # the allometry alone moves a tree's biomass twofold
    assert len([n for n in ALLOMETRIES if n.endswith("chave2014")]) == 25


def test_carbon_is_a_stated_fraction_and_monte_carlo_is_seeded_per_tree():
    allometry = get_allometry("jucker2017-gymnosperm", carbon_fraction=0.5)
    ids, heights, crowns = np.array([7, 8, 9]), np.array([10.0, 25.0, 40.0]), np.array([3.0, 6.0, 9.0])
    first = tree_biomass(allometry, ids, heights, crowns)
    assert np.allclose(first.carbon_kg, 0.5 * first.agb_kg) and np.allclose(first.carbon_sd_kg, 0.5 * first.agb_sd_kg)
    again = tree_biomass(allometry, ids[::-1], heights[::-1], crowns[::-1])
    assert np.array_equal(again.agb_sd_kg[::-1], first.agb_sd_kg)  # a tree's draws follow its id, not its row
    lognormal_sd = first.agb_kg * math.sqrt(math.exp(0.204**2) - 1)
    np.testing.assert_allclose(first.agb_sd_kg, lognormal_sd, rtol=0.1)  # 1000 draws of the residual alone
    unsure = tree_biomass(allometry, ids, heights, crowns, height_sd=np.array([0.0, 3.0, 3.0]))
    assert unsure.agb_sd_kg[0] == first.agb_sd_kg[0] and (unsure.agb_sd_kg[1:] > first.agb_sd_kg[1:]).all()
    exact = Allometry("exact", "test", PowerLaw(0.5, 0.8), PowerLaw(0.02, 2.0, 0.0))
    found = tree_biomass(exact, ids, heights, crowns)
    assert np.all(found.agb_sd_kg == 0)
    assert total(found.agb_kg, found.agb_sd_kg)[2:] == (found.agb_kg.sum(),) * 2  # no error: an interval of zero width


def test_a_total_treats_the_trees_errors_as_shared_unless_told_otherwise():
    values, sds = np.full(100, 500.0), np.full(100, 100.0)
    shared = total(values, sds)
    independent = total(values, sds, shared=0.0)
    assert shared[0] == independent[0] == 50_000
    assert shared[1] == pytest.approx(10_000) and independent[1] == pytest.approx(1_000)
    assert shared[2] < independent[2] < 50_000 < independent[3] < shared[3]
    with pytest.raises(AllometryError, match="must be between 0 and 1"):
        total(values, sds, shared=1.5)


def test_user_equations_are_read_from_yaml_and_checked(tmp_path):
    good = tmp_path / "local.yaml"
    good.write_text("name: local-pine\nsource: a regional inventory\ndbh: {a: 0.6, b: 0.8, sigma: 0.1}\n"
                    "agb: {a: 0.05, b: 1.9, sigma: 0.3}\n")
    local = get_allometry(good)
    assert local.name == "local-pine" and local.route == "direct"
    assert local.agb_kg(H, CD) == pytest.approx(0.05 * 150**1.9 * math.exp(0.3**2 / 2))
    for text, message in (("dbh: {a: -0.6, b: 0.8}\nagb: {a: 0.05, b: 1.9}\n", "a = -0.6 must be a positive number"),
                          ("dbh: {a: 0.6, b: many}\nagb: {a: 0.05, b: 1.9}\n", "b = 'many' must be a non-negative number"),
                          ("dbh: {a: 0.6, b: 0.8}\n", "needs `dbh: {a, b, sigma}` and `agb"),
                          ("dbh: {a: 0.6, b: 0.8}\nwood_density: 3\n", "wood density between 0.1 and 1.5"),
                          ("dbh: {a: 0.6, b: 0.8}\nagb: {a: 1, b: 2}\nslope: 1\n", "unknown keys ['slope']")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(AllometryError, match=message.replace("[", r"\[").replace("{", r"\{")):
            get_allometry(bad)
    with pytest.raises(AllometryError, match="Unknown allometry 'jucker'.*did you mean"):
        get_allometry("jucker")
    with pytest.raises(AllometryError, match="takes no wood density"):
        get_allometry("jucker2017-angiosperm", wood_density=0.5)


def test_trees_carry_their_biomass_whatever_the_blocks_and_from_the_cli(tmp_path):
    allometry = get_allometry("jucker2017-gymnosperm")
    whole = canopy.trees(CHM, allometry=allometry)
    cut = canopy.trees(CHM, allometry=allometry, block_size=16)
    assert len(whole) > 10 and list(whole.tops["tree_id"]) == list(cut.tops["tree_id"])
    for column in ("dbh_cm", "agb_kg", "agb_sd_kg", "carbon_kg"):
        np.testing.assert_allclose(whole.tops[column], cut.tops[column], rtol=1e-9)
        assert np.array_equal(whole.tops[column], whole.crowns[column])
    expected = allometry.agb_kg(whole.tops["height"], whole.tops["crown_diameter_m"])
    np.testing.assert_allclose(whole.tops["agb_kg"], expected)
    out = tmp_path / "trees.gpkg"
    result = CliRunner().invoke(cli, ["trees", str(CHM), "--out", str(out), "--allometry", DEFAULT, "--wood-density", "0.45"])
    assert result.exit_code == 0 and "biomass by jucker2017-global-chave2014" in result.output
    tops = gpd.read_file(out, layer="tops")
    assert {"dbh_cm", "agb_kg", "agb_sd_kg", "carbon_kg", "carbon_sd_kg"} <= set(tops.columns)
    np.testing.assert_allclose(tops["agb_kg"], get_allometry(DEFAULT, wood_density=0.45).agb_kg(tops["height"], tops["crown_diameter_m"]))
    result = CliRunner().invoke(cli, ["trees", str(CHM), "--out", str(out), "--allometry", "jucker2017-angiosperm",
                                      "--wood-density", "0.5"])
    assert result.exit_code == 1 and "takes no wood density" in result.output


def test_a_map_with_an_uncertainty_widens_its_trees_biomass(tmp_path):
    chm = tmp_path / "chm.tif"
    with rasterio.open(CHM) as src:
        profile, heights = src.profile, src.read(1)
    with rasterio.open(chm, "w", **profile) as dst:
        dst.write(heights, 1)
    sure = canopy.trees(chm, allometry=get_allometry("jucker2017-angiosperm"))
    with rasterio.open(tmp_path / "chm.uncertainty.tif", "w", **{**profile, "nodata": None}) as dst:
        dst.write(np.full(heights.shape, 4.0, np.float32), 1)
    unsure = canopy.trees(chm, allometry=get_allometry("jucker2017-angiosperm"))
    np.testing.assert_array_equal(unsure.tops["agb_kg"], sure.tops["agb_kg"])
    assert (unsure.tops["agb_sd_kg"] > sure.tops["agb_sd_kg"]).all()


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """A 200 m synthetic forest at 0.5 m whose origin is neither on the 10 m cells nor on their pixel lattice (shifted by
    3.3 m: the first pixel centre lies 3.55 m into its cell), and its trees; east of the middle, heights are replaced
    by uniform noise from 0 to 40 m, so that cover at 2 m and at 5 m differ."""
    folder = tmp_path_factory.mktemp("forest")
    data = synthetic_forest(200.0, res=0.5, seed=4)
    data = data.assign_coords(x=data.x + 3.3, y=data.y - 3.3).rio.write_transform(None)
    noise = np.random.default_rng(1).uniform(0, 40, data.shape).astype(np.float32)
    data.values[:, 200:] = np.where(np.isfinite(data.values[:, 200:]), noise[:, 200:], np.nan)
    chm = write_forest(folder / "forest.tif", data)
    write_trees(chm, folder / "trees.gpkg", allometry=get_allometry("jucker2017-gymnosperm"))
    return chm, folder / "trees.gpkg"


def test_a_grid_cell_holds_the_numpy_statistics_of_the_pixels_whose_centres_fall_in_it(forest, tmp_path):
    chm, trees = forest
    grid = canopy.aggregate(chm, 10.0, tmp_path / "grid.tif", trees=trees, min_valid_fraction=0.25)
    with rasterio.open(chm) as src:
        heights, transform = src.read(1), src.transform
    assert grid.rio.transform().c % 10 == 0 and grid.rio.transform().f % 10 == 0  # cells on whole multiples of 10 m
    gaps = gap_mask(heights, 0.5, 2.0, 10.0)  # over the whole map at once
    rows, cols = np.mgrid[0 : heights.shape[0], 0 : heights.shape[1]]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    checked = 0
    for (j, i) in [(3, 4), (10, 10), (0, 0), (19, 20), (5, 0), (4, 12), (0, 15), (20, 20)]:
        x, y = float(grid.x[i]), float(grid.y[j])
        inside = (np.abs(xs - x) < 5) & (np.abs(ys - y) < 5)
        values = heights[inside]
        valid = values[np.isfinite(values)]
        fraction = valid.size / 400
        if fraction < 0.25:
            assert np.isnan(grid["mean"].values[j, i])
            continue
        checked += 1
        assert grid["valid_fraction"].values[j, i] == pytest.approx(fraction)
        assert grid["mean"].values[j, i] == pytest.approx(valid.mean(), rel=1e-5)
        assert grid["p95"].values[j, i] == pytest.approx(np.percentile(valid, 95), rel=1e-5)
        assert grid["max"].values[j, i] == valid.max()
        assert grid["cover_5m"].values[j, i] == pytest.approx((valid > 5).mean())
        assert grid["cover_2m"].values[j, i] == pytest.approx((valid > 2).mean())
        assert grid["gap_fraction"].values[j, i] == pytest.approx(gaps[inside & np.isfinite(heights)].mean())
    assert checked >= 6
    strict = canopy.aggregate(chm, 10.0)  # cells under half valid are no data by default
    assert np.isnan(strict["mean"].values[0, 0]) and np.isfinite(grid["mean"].values[0, 0])
    assert grid["valid_fraction"].values[0, 0] < 0.5
    tops = gpd.read_file(trees, layer="tops")
    j, i = 10, 10
    x, y = float(grid.x[i]), float(grid.y[j])
    here = tops[(np.abs(tops.geometry.x - x) < 5) & (np.abs(tops.geometry.y - y) < 5)]
    area_ha = grid["valid_fraction"].values[j, i] * 100 / 1e4
    assert len(here) > 0
    assert grid["agb"].values[j, i] == pytest.approx(here["agb_kg"].sum() / 1000 / area_ha, rel=1e-5)
    assert grid["agb_sd"].values[j, i] == pytest.approx(here["agb_sd_kg"].sum() / 1000 / area_ha, rel=1e-5)  # errors shared
    assert grid["trees_per_ha"].values[j, i] == pytest.approx(len(here) / area_ha, rel=1e-5)
    coarse = canopy.aggregate(chm, 20.0, trees=trees)  # 0.04 ha: the top height is the mean of the 4 tallest
    j, i = np.unravel_index(np.nanargmax(coarse["trees_per_ha"].values), coarse["trees_per_ha"].shape)
    x, y = float(coarse.x[i]), float(coarse.y[j])
    here = tops[(np.abs(tops.geometry.x - x) < 10) & (np.abs(tops.geometry.y - y) < 10)]
    tallest = max(1, round(100 * coarse["valid_fraction"].values[j, i] * 0.04))
    assert len(here) > tallest > 1
    assert coarse["top_height"].values[j, i] == pytest.approx(np.sort(here["height"])[::-1][:tallest].mean(), rel=1e-5)
    band = list(grid.data_vars).index("agb") + 1
    with rasterio.open(tmp_path / "grid.tif") as src:
        assert src.descriptions[:3] == ("mean", "p95", "max") and src.count == len(grid.data_vars) == 13
        assert src.tags(band)["units"] == "Mg/ha" and src.tags(band)["name"] == "agb" and src.descriptions[band - 1] == "agb"
        np.testing.assert_array_equal(src.read(band), grid["agb"].values)
    style = (tmp_path / "grid.agb.qml").read_text()
    assert f'band="{band}"' in style and "Mg/ha" in style
    assert (tmp_path / "grid.qml").read_text() == (tmp_path / "grid.mean.qml").read_text()


def test_a_grid_refuses_a_cell_that_is_not_whole_pixels_and_the_cli_writes_one(forest, tmp_path):
    chm, trees = forest
    with pytest.raises(canopy.analysis.aggregate.AggregateError, match="not a whole multiple of the map's 0.5 m pixels; pass e.g. --res 10.5"):
        canopy.aggregate(chm, 10.3)
    result = CliRunner().invoke(cli, ["aggregate", str(chm), "--res", "10.3", "--out", str(tmp_path / "g.tif")])
    assert result.exit_code == 1 and "Traceback" not in result.output and not (tmp_path / "g.tif").exists()
    result = CliRunner().invoke(cli, ["aggregate", str(chm), "--res", "20", "--out", str(tmp_path / "g.tif")])
    assert result.exit_code == 0 and "cells of 20 m" in result.output
    with rasterio.open(tmp_path / "g.tif") as src:
        assert src.count == 7 and src.res == (20.0, 20.0)


def test_stats_give_each_polygons_biomass_total_interval_and_per_hectare(forest, tmp_path):
    chm, trees = forest
    with rasterio.open(chm) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    stands = gpd.GeoDataFrame({"stand": ["west", "east"]}, crs=crs,
                              geometry=[shapely.box(left, bottom, (left + right) / 2, top), shapely.box((left + right) / 2, bottom, right, top)])
    table = canopy.zonal_stats(chm, stands, stats=["agb", "carbon", "trees_per_ha"], trees=trees)
    tops = gpd.read_file(trees, layer="tops")
    east = tops[tops.geometry.x > (left + right) / 2]
    row = table.iloc[1]
    assert row["agb_Mg"] == pytest.approx(east["agb_kg"].sum() / 1000)
    assert row["agb_Mg_sd"] == pytest.approx(east["agb_sd_kg"].sum() / 1000)  # the trees' errors shared
    assert row["agb_Mg_lower"] < row["agb_Mg"] < row["agb_Mg_upper"]
    valid_ha = row["valid_fraction"] * row["area_ha"]
    assert row["agb_Mg_ha"] == pytest.approx(row["agb_Mg"] / valid_ha)
    assert row["carbon_MgC"] == pytest.approx(0.47 * row["agb_Mg"])
    plain = tmp_path / "plain.gpkg"
    write_trees(chm, plain)
    stands.to_file(tmp_path / "stands.gpkg")
    result = CliRunner().invoke(cli, ["stats", str(chm), "--polygons", str(tmp_path / "stands.gpkg"), "--stats", "agb",
                                      "--trees", str(plain)])
    assert result.exit_code == 1 and "need trees with their biomass" in result.output
