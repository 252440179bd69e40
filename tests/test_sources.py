"""One kind of source: records that open it anywhere, a set opened once per process, each raster checked once per run,
and source objects the user passes in left to the user."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
from affine import Affine

import canopy
from canopy.errors import ImageryReadError
from canopy.imagery import GeoTiffSource, geotiff, open_imagery
from canopy.imagery.source_set import SourceObject
from canopy.request import PredictRequest
from canopy.runtime.plan import make_plan
from rasters import cut_tiles, smooth_rgb, write_raster

ORIGIN = Affine(0.5, 0, 321000.0, 0, -0.5, 4097000.0)
SMALL = {"model": "dinov2_vits14", "weights": "random", "chip_size": 56, "block_size": 84}


def _counting(monkeypatch) -> dict[str, int]:
    """Count the GDAL opens of user imagery and the reads of a raster's last block (the truncation check)."""
    counts = {"opens": 0, "checks": 0}
    open_, check = GeoTiffSource._open, geotiff.check_raster

    def counted_open(self, *args):
        counts["opens"] += 1
        return open_(self, *args)

    def counted_check(ds, label, read_last_block):
        counts["checks"] += bool(read_last_block)
        return check(ds, label, read_last_block)

    monkeypatch.setattr(GeoTiffSource, "_open", counted_open)
    monkeypatch.setattr(geotiff, "check_raster", counted_check)
    return counts


def test_a_local_run_opens_and_checks_each_raster_once(tmp_path, monkeypatch):
    path = write_raster(tmp_path / "rgb.tif", data=smooth_rgb(120, 120), width=120, height=120, transform=ORIGIN)
    counts = _counting(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(path, out=tmp_path / "h.tif", **SMALL)
    assert counts == {"opens": 1, "checks": 1}


def test_a_record_opens_the_raster_elsewhere_without_checking_it_again_and_refuses_a_changed_file(tmp_path, monkeypatch):
    path = write_raster(tmp_path / "rgb.tif", data=smooth_rgb(60, 60), width=60, height=60, transform=ORIGIN)
    with GeoTiffSource(path) as source:
        record = source.ref
    counts = _counting(monkeypatch)
    with pickle.loads(pickle.dumps(record)).open() as again:
        assert again.fingerprint == record.fingerprint and again.bands == [1, 2, 3]
    assert counts == {"opens": 1, "checks": 0}
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ImageryReadError, match=r"rgb.tif changed since the run was planned; run it again"):
        record.open()


def test_a_mosaic_record_carries_its_vrt_apart_from_any_path(tmp_path):
    path = write_raster(tmp_path / "big.tif", data=smooth_rgb(80, 80), width=80, height=80, transform=ORIGIN)
    cut_tiles(path, tmp_path / "tiles")
    with open_imagery([tmp_path / "tiles"]) as sources:
        (record,) = sources.records
        assert record.path is None and record.vrt.startswith("<VRTDataset") and len(record.fingerprint) == 4
        first = sources.open()
        assert sources.open() is first  # opened once while the set is open
        with record.open() as again:
            np.testing.assert_array_equal(again.read_raw(_grid(again))[0], first[0].read_raw(_grid(again))[0])


def _grid(source):
    from canopy.grid import snap_grid

    return snap_grid(source.bounds, source.crs, 0.5)


class _Borrowed:
    """An imagery source object of the user's own (here a GeoTIFF behind it), which records whether it was closed."""

    def __init__(self, path) -> None:
        self._inner = GeoTiffSource(path)
        self.closed = False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def close(self) -> None:
        self.closed = True
        self._inner.close()


def test_a_source_object_of_the_users_is_used_as_it_is_and_never_closed(tmp_path):
    path = write_raster(tmp_path / "rgb.tif", data=smooth_rgb(120, 120), width=120, height=120, transform=ORIGIN)
    borrowed = _Borrowed(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = canopy.predict(borrowed, out=tmp_path / "mine.tif", **SMALL)
        plain = canopy.predict(path, out=tmp_path / "plain.tif", **SMALL)
        with make_plan(PredictRequest.from_options(borrowed, **SMALL)) as plan:
            assert isinstance(plan.sources.records[0], SourceObject) and plan.sources.open()[0] is borrowed
    assert not borrowed.closed
    np.testing.assert_array_equal(mine.values, plain.values)
    borrowed.close()
