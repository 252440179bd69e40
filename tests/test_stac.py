"""STAC: a static catalogue of local COGs, and a STAC API with COGs served over http by a local server."""

from __future__ import annotations

import socket
from pathlib import Path
import warnings
from datetime import datetime, timezone

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import transform_bounds

from canopy.errors import ImageryError, ImageryReadError
from canopy.prediction import predict
from rasters import NEON, cut_tiles

RGB = NEON / "TEAK_043_rgb.tif"


def _bbox():
    with rasterio.open(RGB) as src:
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)


def _predict(imagery, bbox=None, **kwargs):
    return _predicted(imagery, bbox, **kwargs).values


def _predicted(imagery, bbox=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return predict(imagery, bbox or _bbox(), model="dinov2_vits14", weights="random", chip_size=112, **kwargs)


def _items(tiles, href_of, collection="neon", year=2019):
    items = []
    for i, tile in enumerate(tiles):
        with rasterio.open(tile) as src:
            w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        item = pystac.Item(f"tile-{i}", {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
                           [w, s, e, n], datetime(year, 6, 1 + i, tzinfo=timezone.utc), {}, collection=collection)
        item.add_asset("visual", pystac.Asset(href_of(tile), media_type=pystac.MediaType.COG, roles=["data"]))
        items.append(item)
    return items


@pytest.fixture(scope="module")
def single():
    return _predict(RGB)


def test_static_catalogue_of_local_cogs(tmp_path, single):
    tiles = cut_tiles(RGB, tmp_path / "cogs", driver="COG")
    catalog = pystac.Catalog("neon", "NEON tiles")
    for item in _items(tiles, lambda t: str(t)):
        catalog.add_item(item)
    catalog.normalize_and_save(str(tmp_path / "stac"), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    result = _predicted(str(tmp_path / "stac" / "catalog.json"))
    np.testing.assert_array_equal(result.values, single)
    assert result.attrs["canopy_imagery_date"] == "2019-06-01/2019-06-04"  # the items' datetimes, recorded in the map
    assert "canopy_imagery_date" not in _predicted(RGB).attrs  # a plain file says nothing of its date
    with pytest.raises(ImageryError, match=r"has no item over the bbox within 2030"):
        _predict(str(tmp_path / "stac" / "catalog.json"), datetime="2030-01-01/2030-12-31")
    with pytest.raises(ImageryError, match="has no item over the bbox in other"):
        _predict(str(tmp_path / "stac" / "catalog.json"), collections=["other"])
    with pytest.raises(ImageryError, match="has no asset 'nir'"):
        _predict(str(tmp_path / "stac" / "catalog.json"), asset="nir")


def test_stac_api_and_remote_cogs_over_http(tmp_path, local_server, single):
    tiles = cut_tiles(RGB, tmp_path / "site", driver="COG")
    server = local_server(tmp_path / "site")
    items = [i.to_dict() for i in _items(tiles, lambda t: f"{server.url}/{t.name}")]
    server_with_api = local_server(tmp_path / "site", stac_items=items)
    result = _predict(f"stac+{server_with_api.url}/search", collections=["neon"])
    np.testing.assert_array_equal(result, single)
    assert any(r.startswith("POST /search") for r in server_with_api.requests)
    with pytest.raises(ImageryError, match="found no item over the bbox"):
        _predict(f"stac+{server_with_api.url}/search", bbox=(-100.0, 40.0, -99.9, 40.1))


def test_remote_cogs_are_read_by_window_not_downloaded_whole(tmp_path, local_server):
    big = tmp_path / "site" / "big.tif"
    big.parent.mkdir()
    with rasterio.open(RGB) as src:
        data = np.repeat(np.repeat(src.read(), 4, axis=1), 4, axis=2)  # 1600 x 1600 px at 0.025 m
        profile = {**src.profile, "width": 1600, "height": 1600, "transform": src.transform * src.transform.scale(0.25)}
    tmp = tmp_path / "plain.tif"
    with rasterio.open(tmp, "w", **{k: v for k, v in profile.items() if k not in ("blockxsize", "blockysize", "tiled")}) as dst:
        dst.write(data)
    rasterio.shutil.copy(tmp, big, driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE")
    server = local_server(tmp_path / "site")
    corner = (321034.5, 4096741.0, 321044.5, 4096751.0)  # a 10 m corner of the 40 m image, on whole pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = predict(f"{server.url}/big.tif", corner, bbox_crs="EPSG:32611", model="dinov2_vits14", weights="random", chip_size=56)
    assert np.isfinite(result.values).all()
    sent = sum(server.bytes_sent.values())
    assert 0 < sent < 0.5 * big.stat().st_size


def test_unreachable_catalogues_are_clear_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(ImageryReadError, match=f"STAC API http://127.0.0.1:{port}/search could not be searched"):
        _predict(f"stac+http://127.0.0.1:{port}/search")
    with pytest.raises(ImageryReadError, match="STAC catalogue .* could not be read"):
        _predict(f"http://127.0.0.1:{port}/catalog.json")


def test_a_transient_failure_of_a_remote_catalogue_is_retried(tmp_path, local_server, single):
    tiles = cut_tiles(RGB, tmp_path / "site" / "cogs", driver="COG")
    catalog = pystac.Catalog("neon", "NEON tiles")
    for item in _items(tiles, lambda t: f"../cogs/{t.name}"):
        catalog.add_item(item)
    catalog.normalize_hrefs(str(tmp_path / "site" / "stac"))
    for item in catalog.get_items(recursive=True):  # asset hrefs relative to each item's own file
        item.assets["visual"].href = f"../../cogs/{Path(item.assets['visual'].href).name}"
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    server = local_server(tmp_path / "site", flaky={"/stac/catalog.json": 2})
    result = _predict(f"{server.url}/stac/catalog.json")
    np.testing.assert_array_equal(result, single)
    assert server.requests[:3] == ["/stac/catalog.json"] * 3  # two 503s, then the answer
