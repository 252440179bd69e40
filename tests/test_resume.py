"""A run killed with SIGKILL leaves nothing at --out; --resume finishes it with the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rio_cogeo.cogeo import cog_validate

from rasters import NEON

RGB = NEON / "TEAK_043_rgb.tif"
ARGS = ["--imagery", str(RGB), "--model", "dinov2_vits14", "--weights", "random", "--res", "0.2", "--block-size", "32",
        "--chip-size", "56", "--overlap", "14", "--device", "cpu", "--precision", "fp32", "--quiet"]
BLOCKS = 5 * 5  # 200 x 200 px in blocks of 42 (32 put on the lattice of stride 56 - 14)


def _canopy(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "CANOPY_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "canopy", "predict", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed.tif"
    partial = tmp_path / ".killed.tif.partial"
    proc = _canopy(*ARGS, "--out", str(out))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_dir() and len(list(partial.glob("r*_c*.npy"))) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not out.with_suffix(".qml").exists()
    done = len(list(partial.glob("r*_c*.npy")))
    assert 5 <= done < BLOCKS

    resumed = _canopy(*ARGS, "--out", str(out), "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"computed {BLOCKS - done} blocks, reused {done}" in err
    assert not partial.exists()

    fresh_out = tmp_path / "fresh.tif"
    fresh = _canopy(*ARGS, "--out", str(fresh_out))
    _, err = fresh.communicate(timeout=600)
    assert fresh.returncode == 0, err
    assert f"computed {BLOCKS} blocks, reused 0" in err
    assert out.read_bytes() == fresh_out.read_bytes()
    assert cog_validate(out, strict=True) == (True, [], [])


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "a.tif"
    partial = tmp_path / ".a.tif.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text('{"canopy_model": "something else"}')
    proc = _canopy(*ARGS, "--out", str(out), "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert "was made with other settings" in err and "without --resume" in err
    assert "Traceback" not in err and not out.exists()


def test_a_damaged_block_is_recomputed_on_resume_and_the_result_is_the_same(tmp_path, monkeypatch):
    import warnings

    import canopy
    from canopy.errors import DamagedPartialWarning
    from canopy.io.partial import PartialRun

    options = dict(model="dinov2_vits14", weights="random", res=1.0, chip_size=28, block_size=16, device="cpu", precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(RGB, out=tmp_path / "fresh.tif", **options)
    # an interrupted run: every block kept, then two of them damaged (cut in half, garbled chips)
    out = tmp_path / "map.tif"
    with monkeypatch.context() as patch, warnings.catch_warnings():
        patch.setattr(PartialRun, "remove", lambda self: None)
        warnings.simplefilter("ignore")
        canopy.predict(RGB, out=out, **options)
    out.unlink()
    partial = tmp_path / ".map.tif.partial"
    blocks = sorted(partial.glob("r*_c*.npy"))
    cut = blocks[0].read_bytes()
    blocks[0].write_bytes(cut[: len(cut) // 2])
    blocks[1].with_suffix(".border.npz").write_bytes(b"not a zip")
    with pytest.warns(DamagedPartialWarning, match=r"held 2 damaged block\(s\)"):
        summary = canopy.RunSummary.from_attrs(canopy.predict(RGB, out=out, resume=True, **options).attrs)
    assert summary.blocks_computed == 2 and summary.blocks_reused == len(blocks) - 2
    assert out.read_bytes() == (tmp_path / "fresh.tif").read_bytes()


def test_temporaries_left_by_killed_runs_are_removed_and_a_live_run_keeps_others_out(tmp_path):
    import fcntl
    import warnings

    import canopy
    from canopy.errors import OutputPathError

    out = tmp_path / "map.tif"
    stale = [tmp_path / ".map.tif.abc123.tmp.tif", tmp_path / ".map.qml.x9.tmp.qml", tmp_path / ".map.png.q1.tmp.png"]
    other = tmp_path / ".other.tif.abc123.tmp.tif"
    for path in (*stale, other):
        path.write_bytes(b"half")
    options = dict(model="dinov2_vits14", weights="random", res=1.0, chip_size=28, block_size=64, out=out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(RGB, **options)
        assert not any(p.exists() for p in stale) and other.exists()  # another output's file is left alone
        assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tif.abc123.tmp.tif", "map.qml", "map.tif"]
        with open(tmp_path / ".map.tif.lock", "a") as held:  # a live run of the same output
            fcntl.flock(held, fcntl.LOCK_EX)
            with pytest.raises(OutputPathError, match="Another canopy run is writing .*map.tif now"):
                canopy.predict(RGB, **options)


@pytest.mark.parametrize(("change", "named"), [("block_size", "block_size"), ("res", "grid"), ("imagery", "imagery")])
def test_a_resume_at_another_block_size_grid_or_after_the_imagery_changed_is_refused_by_name(tmp_path, monkeypatch, change, named):
    import shutil
    import warnings

    import numpy as np
    import rasterio

    import canopy
    from canopy.errors import ResumeError
    from canopy.io.partial import PartialRun

    rgb = tmp_path / "rgb.tif"
    shutil.copy(RGB, rgb)
    options = dict(model="dinov2_vits14", weights="random", res=1.0, chip_size=28, block_size=16, device="cpu", precision="fp32")
    out = tmp_path / "map.tif"
    with monkeypatch.context() as patch, warnings.catch_warnings():
        patch.setattr(PartialRun, "remove", lambda self: None)  # as if killed before the end: every block kept
        warnings.simplefilter("ignore")
        canopy.predict(rgb, out=out, **options)
    out.unlink()
    kept = sorted(p.name for p in (tmp_path / ".map.tif.partial").iterdir())
    if change == "block_size":
        options["block_size"] = 32
    elif change == "res":
        options["res"] = 0.8
    else:  # the same file name, other pixels: stale blocks must not be reused
        with rasterio.open(rgb, "r+") as dst:
            dst.write(255 - dst.read())
        os.utime(rgb, ns=(rgb.stat().st_atime_ns, rgb.stat().st_mtime_ns + 10**9))
    with warnings.catch_warnings(), pytest.raises(ResumeError, match=rf"made with other settings \({named}\); run again without --resume"):
        warnings.simplefilter("ignore")
        canopy.predict(rgb, out=out, resume=True, **options)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / ".map.tif.partial").iterdir()) == kept  # the earlier run's blocks are left as they were
    assert np.isfinite(np.load(next((tmp_path / ".map.tif.partial").glob("r*_c*.npy")))).any()
