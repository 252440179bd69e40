"""A cluster that lets no one else in: predict and an analysis run through a ``tls://`` scheduler on 127.0.0.1 with the
certificates of Dask's own settings, and a client without a certificate the cluster's CA signed is refused in one
sentence (at once: Dask's own client would wait forever)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from distributed import LocalCluster
from distributed.security import Security
from forests import synthetic_forest, write_forest
from test_blockwise import _features, _same_features

import canopy
from canopy.analysis.trees import write_trees
from canopy.cli.main import cli
from canopy.cluster import ClusterSpec, restore_environment
from rasters import NEON
from varied_model import varied_model_file


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (a CA of its own)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    return {"cluster": _certificate(folder, "cluster"), "stranger": _certificate(folder, "stranger")}


@pytest.fixture(scope="module")
def scheduler(certificates):
    """Two worker processes behind a TLS scheduler on 127.0.0.1 that require certificates its CA signed."""
    cert, key = certificates["cluster"]
    security = Security(tls_ca_file=str(cert), tls_scheduler_cert=str(cert), tls_scheduler_key=str(key),
                        tls_worker_cert=str(cert), tls_worker_key=str(key), tls_client_cert=str(cert), tls_client_key=str(key),
                        require_encryption=True)
    caller = dict(os.environ)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tls://",
                          security=security, dashboard_address=None) as cluster:
            yield cluster.scheduler_address
    finally:
        restore_environment(caller)


def _settings(cert: Path, key: Path) -> dict:
    """Dask's TLS settings for a client, as a user's Dask configuration file would give them."""
    return {"distributed.comm.tls.ca-file": str(cert), "distributed.comm.tls.client.cert": str(cert),
            "distributed.comm.tls.client.key": str(key)}


def test_predict_and_trees_run_through_a_tls_scheduler(scheduler, certificates, tmp_path):
    assert scheduler.startswith("tls://127.0.0.1:")
    model = str(varied_model_file(tmp_path / "varied.safetensors"))
    options = dict(model=model, res=0.2, block_size=64, chip_size=56, overlap=14, device="cpu", precision="fp32", offline=True)
    chm = write_forest(tmp_path / "chm.tif", synthetic_forest(120.0, res=0.5, seed=4))
    with dask.config.set(_settings(*certificates["cluster"])), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(NEON / "TEAK_043_rgb.tif", out=tmp_path / "tls.tif", scheduler=scheduler, **options)
        write_trees(chm, tmp_path / "tls.gpkg", block_size=96, cluster=ClusterSpec(scheduler=scheduler))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(NEON / "TEAK_043_rgb.tif", out=tmp_path / "here.tif", **options)
    with rasterio.open(tmp_path / "tls.tif") as a, rasterio.open(tmp_path / "here.tif") as b:
        ours, theirs = a.read(1), b.read(1)
    assert np.nanmax(np.abs(ours - theirs)) <= 1e-4 and np.nanmax(ours) - np.nanmin(ours) > 1.0  # fp32 at other thread counts
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    write_trees(chm, tmp_path / "here.gpkg", block_size=96)
    _same_features(_features(tmp_path / "tls.gpkg"), _features(tmp_path / "here.gpkg"))


def test_a_client_without_the_clusters_certificate_is_refused_in_one_sentence(scheduler, certificates, tmp_path):
    chm = write_forest(tmp_path / "chm.tif", synthetic_forest(60.0, res=0.5, seed=4))
    args = ["trees", str(chm), "--out", str(tmp_path / "t.gpkg"), "--scheduler", scheduler]
    bare = CliRunner().invoke(cli, args)
    assert bare.exit_code != 0 and "speaks TLS: set its CA certificate and a client certificate" in bare.output
    env = {**os.environ, **{"DASK_" + k.upper().replace(".", "__").replace("-", "_"): v
                            for k, v in _settings(*certificates["stranger"]).items()}}
    stranger = subprocess.run([sys.executable, "-m", "canopy", *args], capture_output=True, text=True, timeout=120, env=env)
    assert stranger.returncode != 0 and "Traceback" not in stranger.stderr
    assert "refused canopy's TLS certificate" in stranger.stderr, stranger.stderr[-2000:]
    assert not (tmp_path / "t.gpkg").exists()
