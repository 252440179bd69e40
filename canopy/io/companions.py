"""The rasters written beside a map, named after it: ``<name>.uncertainty.tif``, ``<name>.lower.tif`` and ``<name>.upper.tif``.

Each is a one-band COG on the map's grid, so every tool that reads one height band (QGIS, GDAL,
``canopy evaluate``, the analyses) reads them as they are, and each gets its own QGIS style.
"""

from __future__ import annotations

from pathlib import Path

UNCERTAINTY = "uncertainty"
LOWER = "lower"
UPPER = "upper"
KINDS = (UNCERTAINTY, LOWER, UPPER)


def companion(path: str | Path, kind: str) -> Path:
    """The path of the ``kind`` raster beside the map at ``path``: ``height.tif`` -> ``height.uncertainty.tif``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{kind}{path.suffix}")


def existing_companions(path: str | Path) -> dict[str, Path]:
    """The companion rasters that exist beside the map at ``path``, by kind."""
    return {kind: companion(path, kind) for kind in KINDS if companion(path, kind).is_file()}
