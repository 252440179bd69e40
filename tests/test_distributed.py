"""predict on Dask distributed: a LocalCluster on 127.0.0.1 gives the single-process bytes, survives a killed
worker, names a block that kills its workers, loads the model once per worker, and resumes either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

import canopy
from canopy.errors import BlockFailedError
from canopy.prediction import RunSummary
from canopy.runtime.dask_tasks import model_loads
from rasters import NEON

RGB = NEON / "TEAK_043_rgb.tif"
OPTIONS = dict(model="dinov2_vits14", weights="random", res=0.2, block_size=32, chip_size=56, overlap=14, device="cpu",
               precision="fp32", offline=True)
BLOCKS = 5 * 5  # 200 x 200 px in blocks of 42 (32 put on the lattice of stride 56 - 14)
POISONED = "r84_c84"  # the middle block


def _predict(out: Path, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canopy.predict(RGB, out=out, **OPTIONS, **extra)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> bytes:
    """The single-process map every distributed run must equal, byte for byte."""
    out = tmp_path_factory.mktemp("single") / "single.tif"
    _predict(out)
    return out.read_bytes()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Two single-threaded worker processes on 127.0.0.1 that die on the block named in the poison file."""
    poison = tmp_path_factory.mktemp("poison") / "blocks.txt"
    os.environ["CANOPY_TEST_POISON"] = str(poison)
    preload = str(Path(__file__).with_name("dask_poison.py"))
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}), LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, preload=[preload]
        ) as cluster, Client(cluster) as client:
            client.poison = poison
            yield client
    finally:
        del os.environ["CANOPY_TEST_POISON"]


def test_two_workers_give_the_single_process_bytes_and_load_the_model_once_each(client, single, tmp_path):
    before = client.run(model_loads)
    out = tmp_path / "two.tif"
    summary = RunSummary.from_attrs(_predict(out, client=client).attrs)
    assert out.read_bytes() == single
    assert summary.blocks_computed == BLOCKS and summary.chips == 25
    loads = {w: n - before.get(w, 0) for w, n in client.run(model_loads).items()}
    assert sorted(loads.values()) == [1, 1], loads  # both workers computed blocks, each loaded the model once
    _predict(tmp_path / "again.tif", client=client)
    assert {w: n - before.get(w, 0) for w, n in client.run(model_loads).items()} == loads  # kept for the next run


def test_a_worker_killed_mid_run_changes_nothing(client, single, tmp_path):
    pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    killed = []

    def progress(p):
        if p.blocks_done >= 3 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    out = tmp_path / "killed.tif"
    _predict(out, client=client, progress=progress)
    assert killed and out.read_bytes() == single
    client.wait_for_workers(2, timeout=120)  # the nanny restarts it, for the next test


def test_a_poison_block_is_named_and_a_single_process_resume_finishes_the_run(client, single, tmp_path):
    client.poison.write_text(POISONED)
    out = tmp_path / "poisoned.tif"
    try:
        with pytest.raises(BlockFailedError, match=rf"block {POISONED} \(rows 84-125, columns 84-125 of the output grid\).*--resume"):
            _predict(out, client=client)
    finally:
        client.poison.unlink()
    partial = tmp_path / ".poisoned.tif.partial"
    kept = len(list(partial.glob("r*_c*.tif")))
    assert not out.exists() and 0 < kept < BLOCKS
    summary = RunSummary.from_attrs(_predict(out, resume=True).attrs)  # in this process
    # a block that was running when the run failed cannot be interrupted: it may still land (atomically) after the
    # error was raised, and the resume then reuses it too
    assert summary.blocks_reused >= kept and summary.blocks_reused + summary.blocks_computed == BLOCKS
    assert out.read_bytes() == single
    client.wait_for_workers(2, timeout=120)


def test_cli_workers_resume_a_killed_single_process_run(single, tmp_path):
    args = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--quiet"]
    for key, value in OPTIONS.items():
        if key != "offline":
            args += [f"--{key.replace('_', '-')}", str(value)]
    out = tmp_path / "map.tif"
    env = {**os.environ, "CANOPY_OFFLINE": "1"}
    first = subprocess.Popen([*args, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)
    partial = tmp_path / ".map.tif.partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and len(list(partial.glob("r*_c*.tif"))) < 5:
        time.sleep(0.05)
    assert first.poll() is None, f"run ended before it could be killed: {first.communicate()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = len(list(partial.glob("r*_c*.tif")))
    resumed = subprocess.run([*args, "--out", str(out), "--resume", "--workers", "1", "--threads-per-worker", "2"],
                             stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Dask dashboard: http://127.0.0.1:" in resumed.stderr
    assert f"computed {BLOCKS - done} blocks, reused {done}" in resumed.stderr
    assert out.read_bytes() == single


def test_a_lost_scheduler_stops_the_run_with_a_resume_hint_and_an_unreachable_one_is_named(tmp_path):
    env = {**os.environ, "CANOPY_OFFLINE": "1", "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"}
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)], stderr=subprocess.DEVNULL, env=env)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = subprocess.Popen([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(scheduler_file),
                                   "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"], stderr=subprocess.DEVNULL, env=env)
        args = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--quiet", "--scheduler-file", str(scheduler_file)]
        for key, value in OPTIONS.items():
            if key != "offline":
                args += [f"--{key.replace('_', '-')}", str(value)]
        out = tmp_path / "map.tif"
        run = subprocess.Popen([*args, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)
        partial = tmp_path / ".map.tif.partial"
        while time.monotonic() < deadline + 240 and run.poll() is None and len(list(partial.glob("r*_c*.tif"))) < 3:
            time.sleep(0.05)
        assert run.poll() is None, f"run ended before the scheduler could be stopped: {run.communicate()}"
        scheduler.send_signal(signal.SIGKILL)
        _, err = run.communicate(timeout=300)
        assert run.returncode == 1 and "Traceback" not in err, err
        assert "Lost the Dask scheduler" in err and "run again with --resume" in err and not out.exists()
    finally:
        for proc in (worker, scheduler):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    elsewhere = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--out", str(tmp_path / "b.tif"),
                 "--model", "dinov2_vits14", "--weights", "random", "--scheduler", "tcp://127.0.0.1:9"]
    unreachable = subprocess.run(elsewhere, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert unreachable.returncode == 1 and "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_a_worker_that_cannot_open_the_imagery_says_so_and_what_to_share(tmp_path):
    from dataclasses import replace

    from canopy.errors import ImageryReadError
    from canopy.request import PredictRequest
    from canopy.runtime.dask_tasks import block_worker
    from canopy.runtime.plan import make_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = make_plan(PredictRequest.from_options(RGB, out=tmp_path / "a.tif", **OPTIONS))
        elsewhere = replace(plan, sources=(replace(plan.sources[0], path=str(tmp_path / "only_on_the_client.tif")),))
        with pytest.raises(ImageryReadError, match=r"On Dask worker process \d+: Imagery .*only_on_the_client.tif does not "
                                                   r"exist.* visible to every worker at the same path"):
            block_worker(elsewhere)
