"""GDAL's configuration during canopy's work, always inside :class:`rasterio.Env`, so nothing outlives the call.

On the main thread rasterio sets an Env's options for the process, which the threads it starts
(read-ahead, writers) see, and unsets them on exit; on any other thread, for that thread only.
Options the user set in the environment are left to the user.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import rasterio
from rasterio.env import set_gdal_config

RUN_CACHE_MB = 256
"""GDAL caches every block it reads up to 5 % of the machine's memory by default, so a long run's peak memory grew
with its region until that cap (docs/benchmarks.md); a run only needs its read-ahead blocks and their neighbours."""

REMOTE_SETTINGS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "1"}
"""For remote rasters: no directory listing on open, retries on transient HTTP errors."""


def _unset(options: dict) -> dict:
    """The options the user has not set in the environment."""
    return {k: v for k, v in options.items() if k not in os.environ}


def run_env() -> AbstractContextManager:
    """GDAL's settings for a run: its block cache held to ``RUN_CACHE_MB``, and the remote settings."""
    return rasterio.Env(**_unset({"GDAL_CACHEMAX": RUN_CACHE_MB, **REMOTE_SETTINGS}))


def remote_env(remote: bool) -> AbstractContextManager:
    """The remote settings while a remote raster (or a VRT that may hold some) opens; nothing for a local one."""
    wanted = _unset(REMOTE_SETTINGS) if remote else {}
    return rasterio.Env(**wanted) if wanted else nullcontext()


def bound_gdal_cache_for_this_process() -> None:
    """Hold GDAL's block cache to ``RUN_CACHE_MB`` for the rest of this process, unless ``GDAL_CACHEMAX`` is set by the
    user: for a Dask worker process, which reads blocks for as long as it lives, in threads no context can span."""
    if "GDAL_CACHEMAX" not in os.environ:
        set_gdal_config("GDAL_CACHEMAX", RUN_CACHE_MB)
