"""Bad input to canopy predict: one clear sentence, exit status 1, no traceback, nothing at --out."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
import torch
from affine import Affine
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from canopy.cli.main import cli
from canopy.models import get_model_spec
from canopy.models.vision_transformer import DinoVisionTransformer
from rasters import NEON, write_raster

RGB = NEON / "TEAK_043_rgb.tif"


def _plot_bbox() -> tuple[float, float, float, float]:
    return transform_bounds("EPSG:32611", "EPSG:4326", 321034.5, 4096711.1, 321074.5, 4096751.1)


def _run(tmp_path, *args, imagery=RGB, debug=False):
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir(exist_ok=True)
    argv = (["--debug"] if debug else []) + ["predict", "--imagery", str(imagery), "--out", str(out), "--model", "dinov2_vits14", "--weights", "random", "-q", *args]
    result = CliRunner().invoke(cli, argv)
    return result, out


def _assert_refused(result, out, message):
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == []


def test_image_without_crs(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", crs=None)
    result, out = _run(tmp_path, imagery=path)
    _assert_refused(result, out, "has no CRS; assign one")


def test_image_without_geotransform(tmp_path):
    path = write_raster(tmp_path / "notransform.tif", transform=None)
    result, out = _run(tmp_path, imagery=path)
    _assert_refused(result, out, "has no geotransform")


def test_file_that_is_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image")
    result, out = _run(tmp_path, imagery=path)
    _assert_refused(result, out, "is not a GeoTIFF GDAL can read")


def test_truncated_raster(tmp_path):
    path = write_raster(tmp_path / "whole.tif", width=256, height=256)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result, out = _run(tmp_path, imagery=cut)
    _assert_refused(result, out, "cannot be read to its end; it may be truncated (GDAL: ")


def test_missing_imagery(tmp_path):
    result, out = _run(tmp_path, imagery=tmp_path / "nowhere.tif")
    _assert_refused(result, out, "does not exist")


def test_too_few_bands(tmp_path):
    path = write_raster(tmp_path / "gray.tif", count=1)
    result, out = _run(tmp_path, imagery=path)
    _assert_refused(result, out, "has 1 band(s); canopy needs RGB imagery with at least 3 bands")


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ("-119.0,37.0,-119.1,37.1", "has minx >= maxx"),
        ("-119.1,37.1,-119.0,37.0", "has miny >= maxy"),
        ("-119.1,95,-119.0,96", "outside longitude -180..180 / latitude -90..90"),
        ("1,2,3", "is not four numbers"),
        ("-100.0,40.0,-99.9,40.1", "does not intersect the imagery, which covers"),
    ],
)
def test_bad_bboxes(tmp_path, bbox, message):
    result, out = _run(tmp_path, "--bbox", bbox)
    _assert_refused(result, out, message)


def test_bbox_with_lon_and_lat_swapped(tmp_path):
    w, s, e, n = _plot_bbox()
    result, out = _run(tmp_path, "--bbox", f"{s},{w},{n},{e}")
    _assert_refused(result, out, "with longitude and latitude swapped")


def test_unknown_model(tmp_path):
    result, out = _run(tmp_path, "--model", "dinov9_huge")
    _assert_refused(result, out, "Unknown model 'dinov9_huge'; choose one of")


def test_weights_that_do_not_fit_the_model(tmp_path):
    spec = get_model_spec("dinov2_vitb14")
    model = DinoVisionTransformer(dataclasses.replace(spec.backbone, depth=1))
    weights = tmp_path / "vitb.pth"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    result = CliRunner().invoke(cli, ["predict", "--imagery", str(RGB), "--out", str(out), "--model", "dinov2_vits14", "--weights", str(weights), "-q"])
    _assert_refused(result, out, "do not fit dinov2_vits14")
    assert "looks like ViT-B/14 (1 blocks)" in result.output


def test_output_directory_missing(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "map.tif"
    result = CliRunner().invoke(cli, ["predict", "--imagery", str(RGB), "--out", str(out), "--model", "dinov2_vits14", "--weights", "random", "-q"])
    assert result.exit_code == 1 and "Output directory" in result.output and "does not exist" in result.output
    assert not (tmp_path / "no").exists()


def test_output_directory_not_writable(tmp_path):
    """A directory the run really cannot write: mode 555 for a user; for root, which writes anywhere, the directory
    mounted read-only in a mount namespace of the child's own (``unshare``, no privilege needed beyond root's)."""
    import shutil
    import subprocess
    import sys

    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "map.tif"
    command = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--out", str(out), "--model", "dinov2_vits14",
               "--weights", "random", "-q"]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"]).returncode:
            pytest.skip("root here, and no user and mount namespaces (unshare) to make a directory root cannot write")
        quoted = " ".join(f"'{part}'" for part in command)
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                   f"mount --bind '{locked}' '{locked}' && mount -o remount,bind,ro '{locked}' && exec {quoted}"]
    else:
        locked.chmod(0o555)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CANOPY_OFFLINE": "1"})
    locked.chmod(0o755)
    assert result.returncode == 1 and f"Output directory {locked} is not writable; choose another --out." in result.stderr
    assert "Traceback" not in result.stderr
    assert list(locked.iterdir()) == []


def test_output_must_be_a_tif(tmp_path):
    result = CliRunner().invoke(cli, ["predict", "--imagery", str(RGB), "--out", str(tmp_path / "map.png"), "--model", "dinov2_vits14", "--weights", "random"])
    assert result.exit_code == 1 and "must end in .tif" in result.output


def test_debug_shows_the_traceback(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", crs=None)
    result, _ = _run(tmp_path, imagery=path, debug=True)
    assert result.exit_code != 0
    assert "has no CRS" in str(result.exception)


def test_unavailable_device(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result, out = _run(tmp_path, "--device", "cuda")
    _assert_refused(result, out, "PyTorch sees no CUDA GPU here")


def test_a_large_sparse_region_is_announced_before_the_run_starts(tmp_path):
    import warnings

    import rasterio

    import canopy
    from canopy.errors import LargeRegionWarning

    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=200_000, height=200_000, count=3, dtype="uint8", crs="EPSG:32611",
                       transform=Affine(0.3, 0, 300000, 0, -0.3, 4100000), tiled=True, blockxsize=512, blockysize=512,
                       sparse_ok=True, compress="deflate"):
        pass
    assert sparse.stat().st_size < 5_000_000  # 120 GB of pixels declared, none written

    class Stop(Exception):
        pass

    def stop(progress):
        raise Stop

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Stop):
            canopy.predict(sparse, model="dinov2_vits14", weights="random", res=0.3, out=tmp_path / "big.tif", progress=stop)
    large = [w for w in caught if issubclass(w.category, LargeRegionWarning)]
    assert len(large) == 1 and re.search(r"3,600.0 km² \(200,000 x 200,00\d px of 0.3 m, [\d,]+ blocks\)", str(large[0].message))
    assert not (tmp_path / "big.tif").exists()


def test_warnings_point_at_the_callers_line_however_deep_canopy_issued_them(tmp_path):
    import warnings

    import canopy
    from canopy.errors import CanopyWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        canopy.predict(RGB, out=tmp_path / "h.tif", model="dinov2_vits14", weights="random", chip_size=56)
    ours = [w for w in caught if issubclass(w.category, CanopyWarning)]
    assert {w.category.__name__ for w in ours} >= {"RandomWeightsWarning", "AmbiguousNodataWarning"}
    assert {(w.filename, w.lineno) for w in ours} == {(__file__, ours[0].lineno)}
