"""GDAL's block cache during a run: bounded, so that a run's memory does not grow with its region."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import rasterio
from rasterio.env import set_gdal_config

RUN_CACHE_MB = 256
"""GDAL caches every block it reads up to 5 % of the machine's memory by default, so a long run's peak memory grew
with its region until that cap (docs/benchmarks.md); a run only needs its read-ahead blocks and their neighbours."""


def bounded_gdal_cache() -> AbstractContextManager:
    """GDAL's block cache held to ``RUN_CACHE_MB`` while the context lasts, unless ``GDAL_CACHEMAX`` is set by the user."""
    if "GDAL_CACHEMAX" in os.environ:
        return nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=RUN_CACHE_MB)


def bound_gdal_cache_for_this_process() -> None:
    """Hold GDAL's block cache to ``RUN_CACHE_MB`` for the rest of this process, unless ``GDAL_CACHEMAX`` is set by the
    user: for a Dask worker, which reads blocks for as long as it lives, in threads no context can span."""
    if "GDAL_CACHEMAX" not in os.environ:
        set_gdal_config("GDAL_CACHEMAX", RUN_CACHE_MB)
