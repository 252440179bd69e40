"""predict on Dask distributed: a LocalCluster on 127.0.0.1 gives the bytes of a single process at the workers'
thread count, survives a killed worker, names a block that kills its workers, loads the model once per worker
(and warns about random weights on every run), resumes either way, leaves the caller's environment alone, and
says in one sentence when the scheduler is lost or absent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
import torch
from distributed import Client, LocalCluster

import canopy
from canopy.errors import BlockFailedError, RandomWeightsWarning
from canopy.prediction import RunSummary
from canopy.cluster import ClusterSpec, connect, restore_environment
from canopy.runtime.dask_tasks import model_loads
from canopy.runtime.numerics import AGREEMENT_BOUND_M
from rasters import NEON
from varied_model import spread_m, varied_model_file

RGB = NEON / "TEAK_043_rgb.tif"
OPTIONS = dict(res=0.2, block_size=32, chip_size=56, overlap=14, device="cpu", precision="fp32", offline=True)
BLOCKS = 5 * 5  # 200 x 200 px in blocks of 42 (32 put on the lattice of stride 56 - 14)
POISONED = "r84_c84"  # the middle block
WORKER_THREADS = 1


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A seeded model whose heights vary by metres, so that maps compared within a bound are a real test."""
    return str(varied_model_file(tmp_path_factory.mktemp("model") / "varied.safetensors"))


def _predict(out: Path, model: str, **extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canopy.predict(RGB, out=out, model=model, **OPTIONS, **extra)


def _in_this_process(out: Path, model: str, **extra):
    """A single-process run at the workers' thread count: the same configuration as the cluster's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    try:
        return _predict(out, model, **extra)
    finally:
        torch.set_num_threads(threads)


def _gdal_cache_mb() -> int:
    from rasterio._env import get_gdal_config

    return int(get_gdal_config("GDAL_CACHEMAX"))


def _heights(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def single(tmp_path_factory, model) -> Path:
    """The single-process map every run on the cluster must equal byte for byte (it runs at the workers' thread count)."""
    out = tmp_path_factory.mktemp("single") / "single.tif"
    _in_this_process(out, model)
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Two single-threaded worker processes on 127.0.0.1 that die on the block named in the poison file."""
    poison = tmp_path_factory.mktemp("poison") / "blocks.txt"
    caller = dict(os.environ)
    os.environ["CANOPY_TEST_POISON"] = str(poison)
    preload = str(Path(__file__).with_name("dask_poison.py"))
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}), LocalCluster(
            n_workers=2, threads_per_worker=WORKER_THREADS, processes=True, host="127.0.0.1", dashboard_address=None,
            preload=[preload]
        ) as cluster, Client(cluster) as client:
            client.poison = poison
            yield client
    finally:
        restore_environment(caller)  # the nannies wrote OMP_NUM_THREADS=1 and more into this process's environment


def test_two_workers_give_the_single_process_bytes_and_load_the_model_once_each(client, single, model, tmp_path):
    before = client.run(model_loads)
    out = tmp_path / "two.tif"
    summary = RunSummary.from_attrs(_predict(out, model, client=client).attrs)
    assert out.read_bytes() == single.read_bytes()
    assert summary.blocks_computed == BLOCKS and summary.chips == 25
    loads = {w: n - before.get(w, 0) for w, n in client.run(model_loads).items()}
    assert sorted(loads.values()) == [1, 1], loads  # both workers computed blocks, each loaded the model once
    assert set(client.run(_gdal_cache_mb).values()) == {256}  # GDAL's block cache held for as long as they live
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):  # said again, though the workers kept the model
        canopy.predict(RGB, out=tmp_path / "again.tif", model=model, client=client, **OPTIONS)
    assert {w: n - before.get(w, 0) for w, n in client.run(model_loads).items()} == loads  # kept for the next run


def test_a_worker_killed_mid_run_changes_nothing(client, single, model, tmp_path):
    pids = client.run(os.getpid)
    victim = next(iter(pids.values()))
    killed = []

    def progress(p):
        if p.blocks_done >= 3 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    out = tmp_path / "killed.tif"
    _predict(out, model, client=client, progress=progress)
    assert killed and out.read_bytes() == single.read_bytes()
    client.wait_for_workers(2, timeout=120)  # the nanny restarts it, for the next test


def test_a_poison_block_is_named_and_a_single_process_resume_finishes_the_run(client, single, model, tmp_path):
    client.poison.write_text(POISONED)
    out = tmp_path / "poisoned.tif"
    try:
        with pytest.raises(BlockFailedError, match=rf"block {POISONED} \(rows 84-125, columns 84-125 of the output grid\).*--resume"):
            _predict(out, model, client=client)
    finally:
        client.poison.unlink()
    partial = tmp_path / ".poisoned.tif.partial"
    kept = len(list(partial.glob("r*_c*.npy")))
    assert not out.exists() and 0 < kept < BLOCKS
    summary = RunSummary.from_attrs(_in_this_process(out, model, resume=True).attrs)
    # a block that was running when the run failed cannot be interrupted: it may still land (atomically) after the
    # error was raised, and the resume then reuses it too
    assert summary.blocks_reused >= kept and summary.blocks_reused + summary.blocks_computed == BLOCKS
    assert out.read_bytes() == single.read_bytes()
    client.wait_for_workers(2, timeout=120)


def test_the_uncertainty_on_the_cluster_has_the_single_process_bytes(client, single, model, tmp_path):
    one = tmp_path / "one.tif"
    _in_this_process(one, model, uncertainty=True)
    assert np.array_equal(_heights(one), _heights(single), equal_nan=True)  # the spread leaves the heights alone
    two = tmp_path / "two.tif"
    _predict(two, model, client=client, uncertainty=True)
    spread = lambda path: path.with_name(f"{path.stem}.uncertainty.tif")  # noqa: E731
    assert two.read_bytes() == one.read_bytes() and spread(two).read_bytes() == spread(one).read_bytes()


def test_cli_workers_resume_a_killed_single_process_run_within_the_bound(single, model, tmp_path):
    """Another configuration (the process's own threads, then a worker's): the same NaN mask and heights within the bound."""
    args = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--model", model, "--quiet"]
    for key, value in OPTIONS.items():
        if key != "offline":
            args += [f"--{key.replace('_', '-')}", str(value)]
    out = tmp_path / "map.tif"
    env = {**os.environ, "CANOPY_OFFLINE": "1"}
    first = subprocess.Popen([*args, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)
    partial = tmp_path / ".map.tif.partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and len(list(partial.glob("r*_c*.npy"))) < 5:
        time.sleep(0.05)
    assert first.poll() is None, f"run ended before it could be killed: {first.communicate()}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = len(list(partial.glob("r*_c*.npy")))
    resumed = subprocess.run([*args, "--out", str(out), "--resume", "--workers", "1", "--threads-per-worker", "2"],
                             stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "Dask dashboard: http://127.0.0.1:" in resumed.stderr
    assert f"computed {BLOCKS - done} blocks, reused {done}" in resumed.stderr
    resumed_heights, reference = _heights(out), _heights(single)
    assert np.array_equal(np.isnan(resumed_heights), np.isnan(reference))
    assert np.nanmax(np.abs(resumed_heights - reference)) <= AGREEMENT_BOUND_M["fp32"]
    assert spread_m(reference) > 1


def test_a_lost_scheduler_stops_the_run_with_a_resume_hint_and_an_unreachable_one_is_named(model, tmp_path):
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
        args = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--model", model, "--quiet",
                "--scheduler-file", str(scheduler_file)]
        for key, value in OPTIONS.items():
            if key != "offline":
                args += [f"--{key.replace('_', '-')}", str(value)]
        out = tmp_path / "map.tif"
        run = subprocess.Popen([*args, "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)
        partial = tmp_path / ".map.tif.partial"
        while time.monotonic() < deadline + 240 and run.poll() is None and len(list(partial.glob("r*_c*.npy"))) < 3:
            time.sleep(0.05)
        assert run.poll() is None, f"run ended before the scheduler could be stopped: {run.communicate()}"
        scheduler.send_signal(signal.SIGKILL)
        _, err = run.communicate(timeout=300)
        assert run.returncode == 1 and "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert re.fullmatch(r"Error: Lost the Dask scheduler at tcp://127\.0\.0\.1:\d+ \(the connection closed\); the blocks "
                            r"already finished are kept: run again with --resume once it is back\.", last), err
        assert not out.exists()
    finally:
        for proc in (worker, scheduler):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    elsewhere = [sys.executable, "-m", "canopy", "predict", "--imagery", str(RGB), "--out", str(tmp_path / "b.tif"),
                 "--model", "dinov2_vits14", "--weights", "random", "--scheduler", "tcp://127.0.0.1:9"]
    # Dask would retry a refused connection for its whole connect timeout, here set far beyond the subprocess's
    patient = {**env, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3600s"}
    unreachable = subprocess.run(elsewhere, stderr=subprocess.PIPE, text=True, env=patient, timeout=300)
    assert unreachable.returncode == 1, unreachable.stderr
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9: nothing listens at tcp://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_a_local_cluster_leaves_the_callers_environment_as_it_was():
    before = dict(os.environ)
    with connect(ClusterSpec(workers=1, threads_per_worker=1)) as client:
        assert dict(os.environ) == before
        # the nanny did write its settings, for the worker it started: they are restored here, not lost there
        assert list(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == ["1"]
    assert dict(os.environ) == before


def test_a_worker_that_cannot_open_the_imagery_says_so_and_what_to_share(tmp_path):
    from dataclasses import replace

    from canopy.errors import ImageryReadError
    from canopy.request import PredictRequest
    from canopy.runtime.dask_tasks import ready_worker
    from canopy.imagery.source_set import SourceSet
    from canopy.runtime.plan import make_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = make_plan(PredictRequest.from_options(RGB, out=tmp_path / "a.tif", model="dinov2_vits14", weights="random",
                                                     **OPTIONS))
        plan.close()
        elsewhere = replace(plan, sources=SourceSet([replace(plan.sources.records[0], path=str(tmp_path / "only_on_the_client.tif"))]))
        with pytest.raises(ImageryReadError, match=r"On Dask worker process \d+: Imagery .*only_on_the_client.tif does not "
                                                   r"exist.* visible to every worker at the same path"):
            ready_worker(elsewhere)


def test_workers_of_a_local_cluster_spread_over_the_gpus(monkeypatch):
    """``--workers N --device cuda`` on a machine with several GPUs: worker k takes GPU k modulo their count."""
    import types

    import distributed

    import canopy.runtime.dask_tasks as tasks

    taken = []
    monkeypatch.setattr(tasks, "select_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "set_device", taken.append)
    plan = types.SimpleNamespace(device="cuda")
    for gpus, name, expected in ((3, 4, [1]), (3, "tcp://10.0.0.1:1", []), (1, 2, [])):
        taken.clear()
        monkeypatch.setattr(torch.cuda, "device_count", lambda gpus=gpus: gpus)
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: types.SimpleNamespace(name=name))
        tasks._take_own_gpu(plan)
        assert taken == expected, (gpus, name)
