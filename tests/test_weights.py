"""Weight resolution: explicit path, cache, verified download from a local server, offline mode."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from canopy.errors import (
    ChecksumMismatchError,
    DownloadError,
    OfflineError,
    RandomWeightsWarning,
    WeightsNotFoundError,
)
from canopy.models import get_model_spec, load_backbone
from canopy.models.registry import WeightSource
from canopy.cache import cache_dir
from canopy.models.weights import cached_path, find_cached, resolve_weights


@pytest.fixture
def small_spec():
    spec = get_model_spec("dinov2_vits14")
    return dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=2), head=dataclasses.replace(spec.head, layers=(0, 0, 1, 1)))


@pytest.fixture
def served_checkpoint(tmp_path, small_spec, serve_directory):
    """A random checkpoint for ``small_spec`` served from 127.0.0.1; returns (url, sha256, bytes)."""
    from canopy.models.vision_transformer import DinoVisionTransformer

    model = DinoVisionTransformer(small_spec.backbone)
    model.init_random(11)
    site = tmp_path / "site"
    site.mkdir()
    path = site / "small_pretrain.pth"
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    (site / "junk_pretrain.pth").write_bytes(b"<html>not found</html>")
    base = serve_directory(site)
    return base, hashlib.sha256(data).hexdigest(), data


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CANOPY_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CANOPY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "canopy"


def test_download_lands_in_the_cache_and_is_reused(small_spec, served_checkpoint):
    base, sha, data = served_checkpoint
    spec = dataclasses.replace(small_spec, weights=(WeightSource(f"{base}/small_pretrain.pth", sha),))
    seen = []
    resolved = resolve_weights(spec, progress=lambda done, total: seen.append((done, total)))
    assert resolved.path == cached_path(spec, spec.weights[0]) and resolved.path.read_bytes() == data
    assert resolved.identity == sha
    assert seen[-1] == (len(data), len(data))
    assert list(resolved.path.parent.iterdir()) == [resolved.path]
    again = resolve_weights(spec, offline=True)
    assert again.path == resolved.path and find_cached(spec) == resolved.path


def test_wrong_checksum_leaves_nothing(small_spec, served_checkpoint):
    base, sha, _ = served_checkpoint
    spec = dataclasses.replace(small_spec, weights=(WeightSource(f"{base}/small_pretrain.pth", "0" * 64),))
    with pytest.raises(ChecksumMismatchError, match=f"has SHA-256 {sha}, not the published 0000"):
        resolve_weights(spec)
    folder = cached_path(spec, spec.weights[0]).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_unverifiable_junk_download_leaves_nothing(small_spec, served_checkpoint):
    base, _, _ = served_checkpoint
    spec = dataclasses.replace(small_spec, weights=(WeightSource(f"{base}/junk_pretrain.pth", None),))
    with pytest.raises(DownloadError, match="not a usable checkpoint"):
        resolve_weights(spec)
    assert list(cached_path(spec, spec.weights[0]).parent.iterdir()) == []


def test_http_error_leaves_nothing(small_spec, served_checkpoint):
    base, _, _ = served_checkpoint
    spec = dataclasses.replace(small_spec, weights=(WeightSource(f"{base}/missing.pth", None),))
    with pytest.raises(DownloadError, match="failed"):
        resolve_weights(spec)
    assert list(cached_path(spec, spec.weights[0]).parent.iterdir()) == []


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_mode_says_which_file_to_place_where(small_spec, monkeypatch, how):
    kwargs = {}
    if how == "argument":
        kwargs["offline"] = True
    else:
        monkeypatch.setenv("CANOPY_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        resolve_weights(get_model_spec("dinov2_vits14"), **kwargs)
    message = str(info.value)
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth" in message
    assert str(cache_dir() / "weights" / "dinov2_vits14" / "dinov2_vits14_pretrain.pth") in message


def test_explicit_path_and_random(tmp_path):
    spec = get_model_spec("dinov2_vits14")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(spec, tmp_path / "nope.pth")
    assert resolve_weights(spec, "random").identity == "random(seed=0)"
    assert resolve_weights(spec, "random(seed=7)").seed == 7


def test_load_backbone_from_the_cache_in_offline_mode(small_spec, served_checkpoint, monkeypatch):
    """The full path a user takes: the cached file is found by name and loads strictly."""
    base, sha, _ = served_checkpoint
    spec = dataclasses.replace(small_spec, weights=(WeightSource(f"{base}/small_pretrain.pth", sha),))
    resolve_weights(spec)
    monkeypatch.setattr("canopy.models.backbone.get_model_spec", lambda name: spec)
    model = load_backbone("dinov2_vits14", offline=True)
    assert model.blocks[1].attn.qkv.weight.abs().sum() > 0


def test_random_weights_warn_loudly():
    with pytest.warns(RandomWeightsWarning, match="mean nothing"):
        model = load_backbone("dinov2_vits14", "random")
    assert model.n_blocks == 12


def test_a_files_sha256_is_computed_once_until_the_file_changes(tmp_path, monkeypatch):
    import hashlib
    import os

    import canopy.models.weights as weights

    path = tmp_path / "weights.pth"
    path.write_bytes(b"first weights")
    hashed = []
    real = weights._hash_file
    monkeypatch.setattr(weights, "_hash_file", lambda p: hashed.append(p) or real(p))
    first = weights.sha256_of(path)
    assert first == hashlib.sha256(b"first weights").hexdigest() and weights.sha256_of(path) == first
    assert len(hashed) == 1  # the second time from the record in the cache directory
    path.write_bytes(b"other weights")
    os.utime(path, ns=(1, 1))  # whatever the clock: a different modification time
    assert weights.sha256_of(path) == hashlib.sha256(b"other weights").hexdigest() and len(hashed) == 2
    (weights.cache_dir() / "sha256.json").write_text("not json")  # a damaged record costs a hash, nothing else
    assert weights.sha256_of(path) == hashlib.sha256(b"other weights").hexdigest() and len(hashed) == 3
