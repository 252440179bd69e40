"""CI cannot go quietly green: with CANOPY_NO_SKIPS set (as .ci/run sets it), a skip fails unless its reason names CUDA."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

_PROBE = '''
import pytest

pytest.importorskip("{module}")


def test_skipped_without_reason_to():
    pytest.skip("a dependency is missing")


@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_skipped_for_want_of_cuda():
    pass


def test_runs():
    pass
'''


def _pytest(folder: Path, no_skips: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CANOPY_NO_SKIPS"} | ({"CANOPY_NO_SKIPS": "1"} if no_skips else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                          capture_output=True, text=True, cwd=folder, env=env | {"COLUMNS": "400"})


def test_a_skip_fails_the_run_unless_it_is_for_want_of_cuda(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(_PROBE.format(module="json"))
    assert _pytest(tmp_path, no_skips=False).returncode == 0
    guarded = _pytest(tmp_path, no_skips=True)
    assert guarded.returncode == 1
    assert "1 failed, 1 passed, 1 skipped" in guarded.stdout, guarded.stdout
    assert "FAILED test_probe.py::test_skipped_without_reason_to" in guarded.stdout
    reason = "skipped where every test but the CUDA ones must run (CANOPY_NO_SKIPS is set): Skipped: a dependency is missing"
    assert reason in guarded.stdout


def test_a_module_skipped_as_it_is_imported_fails_the_run(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(_PROBE.format(module="a_module_that_is_not_installed"))
    assert "1 skipped" in _pytest(tmp_path, no_skips=False).stdout
    guarded = _pytest(tmp_path, no_skips=True)
    assert guarded.returncode != 0 and "skipped where every test but the CUDA ones must run" in guarded.stdout


def test_ci_sets_the_guard():
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "export CANOPY_NO_SKIPS=1" in script
