"""What real archives contain: damaged files, odd CRSs, disguised formats, oversized declarations, and a seeded
loop of random small TIFFs. Each bad input must end in one sentence naming the file (and the window where
one is involved), exit status 1, no traceback without --debug, and nothing at --out."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from click.testing import CliRunner

import canopy
from canopy.cli.main import cli
from canopy.errors import CanopyError
from canopy.grid import OutputGrid
from canopy.imagery import GeoTiffSource
from canopy.imagery.radiometry import scaling_for_region
from rasters import NEON
from varied_model import spread_m, varied_model_file

RGB = NEON / "TEAK_043_rgb.tif"  # tiled, DEFLATE, nodata 255, like every NEON orthophoto
ORIGIN = Affine(0.5, 0, 321000.0, 0, -0.5, 4097000.0)
FAST = ["--model", "dinov2_vits14", "--weights", "random", "--chip-size", "56", "--res", "0.5"]


def _refused(args: list[str], out: Path, *phrases: str, debug: bool = False):
    """Run the CLI and check the refusal: exit 1, one line naming what is wrong, no traceback, nothing written."""
    result = CliRunner().invoke(cli, [*(["--debug"] if debug else []), "predict", *args, "--out", str(out), "-q", *FAST])
    if debug:
        return result
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert not out.exists() and not out.with_suffix(".qml").exists()
    return errors[0]


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    base = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype.name,
                crs="EPSG:32611", transform=ORIGIN)
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(data)
    return path


# ---- damaged files ------------------------------------------------------------------------------

def test_a_neon_like_geotiff_cut_by_one_byte_is_refused_in_one_sentence(tmp_path):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(RGB.read_bytes()[:-1])
    error = _refused(["--imagery", str(cut)], tmp_path / "out.tif", str(cut), "may be truncated", "GDAL:")
    assert error.startswith(f"Error: Imagery {cut} cannot be read to its end")


def test_a_damaged_tile_mid_run_names_the_file_its_window_and_the_block_and_keeps_the_cause(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8)
    damaged = _write(tmp_path / "damaged.tif", data, tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 2000] = bytes(2000)
    damaged.write_bytes(bytes(raw))
    out = tmp_path / "out.tif"
    error = _refused(["--imagery", str(damaged), "--block-size", "64"], out, str(damaged), "at its pixels columns",
                     "for output block r", "GDAL:")
    assert "rows" in error and "columns" in error
    debug = _refused(["--imagery", str(damaged), "--block-size", "64"], out, debug=True)
    assert isinstance(debug.exception, CanopyError)
    chain, cause = [], debug.exception
    while cause is not None:
        chain.append(type(cause).__name__)
        cause = cause.__cause__
    assert "RasterioIOError" in chain, chain  # GDAL's own error stays in the chain for --debug


def test_a_local_engineering_crs_is_refused_by_name(tmp_path):
    data = np.full((3, 32, 32), 100, np.uint8)
    local = _write(tmp_path / "local.tif", data, crs=rasterio.crs.CRS.from_wkt('LOCAL_CS["local grid",UNIT["metre",1]]'))
    error = _refused(["--imagery", str(local)], tmp_path / "out.tif", str(local), "local (engineering) CRS")
    assert error.endswith("assign its real CRS (e.g. gdal_edit.py -a_srs EPSG:32611).")


def test_a_declared_size_is_not_allocated_before_it_is_refused(tmp_path):
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=2147483647, height=1, count=3, dtype="uint8", crs="EPSG:32611",
                       transform=ORIGIN, sparse_ok=True):
        pass
    assert huge.stat().st_size < 2000
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))\n"
            "from canopy.cli.main import main\nsys.argv = ['canopy', 'predict', '--imagery', sys.argv[1], '--out', sys.argv[2], "
            "'--model', 'dinov2_vits14', '--weights', 'random', '-q']\nmain()")
    done = subprocess.run([sys.executable, "-c", code, str(huge), str(tmp_path / "out.tif")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"Imagery {huge} is stored in blocks of 2147483647 x 1 px" in done.stderr


# ---- disguised formats and remote access ---------------------------------------------------------

def _vrt(sources: list[str]) -> str:
    simple = "".join(f'<SimpleSource><SourceFilename relativeToVRT="0">{s}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
                     for s in sources for b in (1,))
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}">{simple}</VRTRasterBand>' for b in (1, 2, 3))
    return (f'<VRTDataset rasterXSize="80" rasterYSize="81"><SRS>EPSG:32611</SRS>'
            f"<GeoTransform>321000, 0.5, 0, 4097000, 0, -0.5</GeoTransform>{bands}</VRTDataset>")


def test_a_vrt_renamed_tif_is_refused_without_a_single_request(tmp_path, local_server):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(RGB, served / "remote.tif")
    server = local_server(served)
    disguised = tmp_path / "disguised.tif"
    disguised.write_text(_vrt([f"/vsicurl/{server.url}/remote.tif"]))
    _refused(["--imagery", str(disguised)], tmp_path / "out.tif", str(disguised), "not a GeoTIFF", "as its name says")
    assert server.requests == []


def test_a_named_vrt_of_geotiffs_is_a_mosaic_and_its_sources_pass_the_same_checks(tmp_path):
    shutil.copy(RGB, tmp_path / "tile.tif")
    good = tmp_path / "mosaic.vrt"
    good.write_text(_vrt([str(tmp_path / "tile.tif")]))
    model = str(varied_model_file(tmp_path / "varied.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = canopy.predict(good, model=model, weights="random", chip_size=56, res=0.5)
        with rasterio.open(RGB) as src:  # what the VRT says: the tile's first band, 80 x 81 px, on its own georeferencing
            grey = src.read(1, window=((0, 81), (0, 80)))
        same = tmp_path / "same.tif"
        with rasterio.open(same, "w", driver="GTiff", width=80, height=81, count=3, dtype="uint8", crs="EPSG:32611",
                           transform=Affine(0.5, 0, 321000, 0, -0.5, 4097000)) as dst:
            dst.write(np.stack([grey] * 3))
        direct = canopy.predict(same, model=model, weights="random", chip_size=56, res=0.5)
    assert spread_m(result.values) > 1.0
    np.testing.assert_array_equal(result.values, direct.values)  # the VRT's pixels, read through its own georeferencing
    (tmp_path / "tile.png").write_bytes(b"\x89PNG")
    bad = tmp_path / "bad.vrt"
    bad.write_text(_vrt([str(tmp_path / "tile.png")]))
    _refused(["--imagery", str(bad)], tmp_path / "out.tif", str(bad), "tile.png", "not a GeoTIFF (.tif) or an http(s) URL")


def test_gdal_virtual_paths_are_refused_and_file_urls_are_read(tmp_path):
    _refused(["--imagery", "/vsicurl/http://127.0.0.1:9/a.tif"], tmp_path / "out.tif", "/vsicurl/http://127.0.0.1:9/a.tif",
             "give remote imagery as its URL")
    other = tmp_path / "a.jp2"
    other.write_bytes(b"x")
    _refused(["--imagery", str(other)], tmp_path / "out.tif", str(other), "neither a GeoTIFF")
    with GeoTiffSource(RGB.as_uri()) as source:
        assert source.path == RGB.resolve()


# ---- a seeded loop of random small TIFFs ---------------------------------------------------------

_CRSS = ["EPSG:32611", "EPSG:4326", "EPSG:3857", 'LOCAL_CS["local grid",UNIT["metre",1]]', None]


def _random_tiff(path: Path, rng: np.random.Generator) -> None:
    """A small TIFF with random dimensions, bands, type, nodata, CRS and geotransform, sometimes cut or garbled."""
    count = int(rng.integers(1, 5))
    dtype = str(rng.choice(["uint8", "uint16", "float32", "int16"]))
    height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    crs = _CRSS[int(rng.integers(len(_CRSS)))]
    scale = float(rng.choice([0.5, 1e-6, 1e6, -0.5]))
    transform = Affine(scale, 0, float(rng.uniform(-1e7, 1e7)), 0, -abs(scale), float(rng.uniform(-1e7, 1e7)))
    data = rng.integers(0, 255, (count, height, width)).astype(dtype)
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, transform=transform,
                   nodata=[None, 0, 255][int(rng.integers(3))])
    if crs is not None:
        profile["crs"] = rasterio.crs.CRS.from_user_input(crs) if not crs.startswith("LOCAL") else rasterio.crs.CRS.from_wkt(crs)
    if rng.random() < 0.5:
        profile.update(tiled=True, blockxsize=16, blockysize=16, compress=str(rng.choice(["deflate", "lzw"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    damage = rng.random()
    raw = bytearray(path.read_bytes())
    if damage < 0.25:
        path.write_bytes(bytes(raw[: int(len(raw) * rng.uniform(0.3, 0.99))]))
    elif damage < 0.5:
        start = int(rng.integers(8, len(raw)))
        raw[start : start + 64] = rng.integers(0, 256, min(64, len(raw) - start), dtype=np.uint8).tobytes()
        path.write_bytes(bytes(raw))


def test_a_seeded_loop_of_random_tiffs_is_read_or_refused_by_name(tmp_path):
    def too_slow(signum, frame):
        raise TimeoutError

    rng = np.random.default_rng(20261127)
    outcomes = {"read": 0, "refused": 0, "stretched": 0}
    previous = signal.signal(signal.SIGALRM, too_slow)
    try:
        for i in range(300):
            path = tmp_path / f"fuzz_{i:03d}.tif"
            _random_tiff(path, rng)
            signal.alarm(5)  # a file that hangs canopy is a failure too
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with GeoTiffSource(path) as source:
                        grid = OutputGrid(source.crs, max(source.res, 1e-3), source.bounds[0], source.bounds[3], 8, 8)
                        if source.scaling is None:  # 16-bit, signed or float: stretched over the region, as a run does
                            with GeoTiffSource.from_ref(replace(source.ref, scaling=scaling_for_region([source], grid))) as scaled:
                                rgb = scaled.read(grid).rgb
                            outcomes["stretched"] += 1
                        else:
                            rgb = source.read(grid).rgb
                        assert rgb.dtype == np.float32 and np.all((rgb >= 0) & (rgb <= 1)), path.name
                outcomes["read"] += 1
            except CanopyError as exc:
                assert path.name in str(exc), f"{path.name}: {exc}"
                assert "inf" not in str(exc).split(path.name)[-1], str(exc)
                outcomes["refused"] += 1
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["read"] > 10 and outcomes["stretched"] > 5 and outcomes["refused"] > 100, outcomes
