"""Every command that writes leaves whole files or none: killed (SIGKILL) at named points, just before each file
of its output lands, each name holds either what an uninterrupted run writes there or what was there before,
never part of a new file, and the next run cleans up what the killed one left and finishes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from rasters import NEON

CHM = NEON / "TEAK_043_chm_1m.tif"

_KILLED_AT = """
import os, signal, sys
from pathlib import Path

watched, kill_at, landed_log = Path(sys.argv[1]).resolve(), int(sys.argv[2]), sys.argv[3]
real_replace, landed = os.replace, []


def replace(src, dst, *args, **kwargs):  # every canopy output lands through os.replace (canopy.io.atomic)
    target = Path(dst).resolve()
    if target.parent == watched and not target.name.startswith("."):
        if len(landed) == kill_at:
            with open(landed_log, "a") as log:
                log.write(f"killed before {target.name}\\n")
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        landed.append(target.name)
        with open(landed_log, "a") as log:
            log.write(f"landed {target.name}\\n")
        return None
    return real_replace(src, dst, *args, **kwargs)


os.replace = replace
from canopy.cli.main import main

sys.argv = ["canopy", *sys.argv[4:]]
main()
"""


def _run(args: list[str], watched: Path, kill_at: int, log: Path) -> subprocess.CompletedProcess:
    """Run ``canopy ARGS``, killed just before the ``kill_at + 1``-th file lands in ``watched`` (never, if it writes fewer)."""
    log.unlink(missing_ok=True)
    return subprocess.run([sys.executable, "-c", _KILLED_AT, str(watched), str(kill_at), str(log), *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "CANOPY_OFFLINE": "1"})


def _content(path: Path):
    """What a file holds, for comparing two runs' files: bytes, less what records when it was written."""
    if path.suffix == ".gpkg":
        layers = gpd.list_layers(path)["name"].tolist()
        tables = {name: gpd.read_file(path, layer=name).drop(columns="update_time", errors="ignore") for name in layers}
        return {name: (t.to_wkt() if isinstance(t, gpd.GeoDataFrame) else t).to_dict("list")  # layer_styles has no geometry
                for name, t in tables.items()}
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        data.pop("fitted", None)  # the time of the fit
        return data
    if path.suffix == ".qgs":
        return re.sub(r"<creation>[^<]*</creation>", "", path.read_text())  # when the project was made
    if path.suffix in (".tif", ".png"):
        with rasterio.open(path) as src:
            return src.read().tobytes(), src.profile.get("crs"), src.transform, src.tags()
    return path.read_bytes()


def _same(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes() or str(_content(a)) == str(_content(b))


def _inputs(folder: Path) -> dict[str, list[str]]:
    """Each writing command's arguments, with its output in ``<folder>/out``, and that folder's name per command."""
    with rasterio.open(CHM) as src:
        profile, heights = src.profile, src.read(1)
        left, bottom, right, top = src.bounds
    harvested = heights.copy()
    harvested[10:30, 10:30] = 0.5
    after = folder / "after.tif"
    with rasterio.open(after, "w", **profile) as dst:
        dst.write(harvested, 1)
    mapped = folder / "distorted.tif"  # heights with canopy's tags, to calibrate
    cog = {k: v for k, v in profile.items() if k not in ("blockxsize", "blockysize", "tiled")}
    with rasterio.open(mapped, "w", **{**cog, "driver": "COG", "nodata": np.nan, "dtype": "float32"}) as dst:
        dst.write(np.where(heights == profile["nodata"], np.nan, 0.7 * heights + 2).astype(np.float32), 1)
        dst.update_tags(canopy_model="meta-chm-v2", canopy_weights="a" * 64, canopy_head_weights="b" * 64)
    stands = folder / "stands.gpkg"
    cy = (bottom + top) / 2
    gpd.GeoDataFrame({"stand": ["N", "S"]}, geometry=[box(left, cy, right, top), box(left, bottom, right, cy)],
                     crs=profile["crs"]).to_file(stands, driver="GPKG")
    out = folder / "out"
    return {
        "predict": ["predict", "--imagery", str(NEON / "TEAK_043_rgb.tif"), "--model", "dinov2_vits14", "--weights", "random",
                    "--res", "1.0", "--chip-size", "28", "--quicklook", "--quiet", "--out", str(out / "map.tif")],
        "trees": ["trees", str(CHM), "--out", str(out / "trees.gpkg")],
        "forest": ["forest", str(CHM), "--min-area-ha", "0.05", "--out", str(out / "forest.gpkg")],
        "change": ["change", str(CHM), str(after), "--min-area-ha", "0.01", "--out", str(out / "change.tif")],
        "calibrate": ["calibrate", str(mapped), str(CHM), "--plot", str(out / "calibration.png"), "--out", str(out / "calibration.json")],
        "export qgis": ["export", "qgis", str(CHM), "--polygons", str(stands), "--out", str(out / "project")],
    }


@pytest.mark.parametrize("command", ["predict", "trees", "forest", "change", "calibrate", "export qgis"])
def test_a_kill_after_each_file_leaves_whole_files_and_the_next_run_finishes(tmp_path, command):
    args = _inputs(tmp_path)[command]
    out = tmp_path / "out"
    watched = out / "project" if command == "export qgis" else out
    log = tmp_path / "landed.log"

    reference = tmp_path / "reference"
    out.mkdir()
    done = _run(args, watched, 10**6, log)
    assert done.returncode == 0, done.stderr[-3000:]
    order = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert sorted(order) == sorted(p.name for p in watched.iterdir()), "a file reached its name without an atomic rename"
    watched.rename(reference)

    for kill_at, name in enumerate(order):  # named points: just before each file lands, after those before it
        watched.mkdir(parents=True, exist_ok=True)
        for earlier in order:  # what an earlier run left at the output's names
            (watched / earlier).write_bytes(f"the previous {earlier}".encode())
        killed = _run(args, watched, kill_at, log)
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert log.read_text().splitlines()[-1] == f"killed before {name}"
        assert sorted(p.name for p in watched.iterdir() if not p.name.startswith(".")) == sorted(order)
        for landed in order[:kill_at]:
            assert _same(watched / landed, reference / landed), f"{landed}, killed before {name}"
        for waiting in order[kill_at:]:  # never part of a new one
            assert (watched / waiting).read_bytes() == f"the previous {waiting}".encode(), f"{waiting}, killed before {name}"

    again = _run(args, watched, 10**6, log)  # the next run replaces what the killed ones left, temporaries included
    assert again.returncode == 0, again.stderr[-3000:]
    left = [p for p in out.rglob("*") if p != watched]
    assert sorted(p.name for p in left) == sorted(order) and all(p.parent == watched for p in left), "temporaries left"
    for landed in order:
        assert _same(watched / landed, reference / landed), f"{landed}, in the run after the kills"


def test_a_run_killed_before_its_map_lands_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    args = _inputs(tmp_path)["predict"]
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "landed.log"
    killed = _run(args, out, 2, log)  # every block done and the COG written whole, not yet renamed onto map.tif (it lands last)
    assert killed.returncode == -9 and log.read_text().splitlines() == ["landed map.qml", "landed map.png", "killed before map.tif"]
    resumed = _run([*args[:-1], str(out / "map.tif"), "--resume"], out, 10**6, log)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    blocks = int(re.search(r"reused (\d+)", resumed.stderr).group(1))
    assert blocks > 0 and "computed 0 blocks" in resumed.stderr  # only the file was written again
    args[-1] = str(tmp_path / "fresh.tif")
    fresh = _run(args, tmp_path, 10**6, log)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert (out / "map.tif").read_bytes() == (tmp_path / "fresh.tif").read_bytes()
