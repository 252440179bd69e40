"""The cache directory for weights and tile indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache directory, read from the environment at call time.

    Returns
    -------
    Path
        ``$CANOPY_CACHE_DIR``, else ``$XDG_CACHE_HOME/canopy``, else ``~/.cache/canopy``.
    """
    explicit = os.environ.get("CANOPY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "canopy"
