"""Shared fixtures: an isolated weights cache and online/offline switches for every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the weights cache at a fresh temporary directory and clear offline mode."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CANOPY_CACHE_DIR", str(cache))
    monkeypatch.delenv("CANOPY_OFFLINE", raising=False)
    return cache
