"""A run killed with SIGKILL leaves nothing at --out; --resume finishes it with the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
        if partial.is_dir() and len(list(partial.glob("r*_c*.tif"))) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not out.with_suffix(".qml").exists()
    done = len(list(partial.glob("r*_c*.tif")))
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
