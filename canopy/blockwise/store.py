"""A run's finished blocks, one folder beside the output: each stage's arrays per block, kept for ``--resume``.

A block's results in a stage are ``.npy`` files (memory-mappable, so a large block is read a tile
at a time) written atomically, then a marker naming them; a block counts as done in a stage only
once its marker is there, so a run killed at any moment leaves whole blocks. The folder carries the
run's fingerprint (:func:`canopy.io.partial.open_run_folder`, as ``predict``'s): ``--resume`` keeps
blocks only for the same inputs and settings, and blocks that cannot be read whole are computed again.
Tables (a block's trees, its polygons) are stored as columns and their geometries' WKB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from canopy.grid import Block
from canopy.io.atomic import atomic_path
from canopy.io.partial import open_run_folder

_MARK = ".done"
_GEOMETRY = "geometry.wkb"
_OFFSETS = "geometry.offsets"


class BlockStore:
    """The folder of a run's finished blocks.

    Parameters
    ----------
    folder
        Where the blocks are kept (created; emptied unless resuming a run with the same fingerprint).
    fingerprint
        Everything that decides the results (inputs, settings, block size).
    resume
        Keep the blocks of an earlier run with the same fingerprint.

    Raises
    ------
    ResumeError
        If ``resume`` is set and the earlier run had other settings.
    """

    def __init__(self, folder: Path, fingerprint: dict[str, Any], resume: bool) -> None:
        self.dir = Path(folder)
        open_run_folder(self.dir, fingerprint, resume, self._drop_damaged)

    @classmethod
    def attach(cls, folder: str | Path) -> BlockStore:
        """The store in ``folder``, opened by another process, to write blocks into (a Dask worker's view)."""
        store = cls.__new__(cls)
        store.dir = Path(folder)
        return store

    def _file(self, stage: str, block: Block, name: str) -> Path:
        return self.dir / f"{stage}.{block.key}.{name}.npy"

    def _mark(self, stage: str, block: Block) -> Path:
        return self.dir / f"{stage}.{block.key}{_MARK}"

    def has(self, stage: str, block: Block) -> bool:
        """Whether a block's results in ``stage`` are all stored."""
        return self._mark(stage, block).is_file()

    def save(self, stage: str, block: Block, arrays: dict[str, np.ndarray]) -> None:
        """Store a block's arrays in ``stage``, each atomically, then its marker."""
        for name, values in arrays.items():
            with atomic_path(self._file(stage, block, name)) as tmp, open(tmp, "wb") as f:
                np.save(f, np.asarray(values), allow_pickle=False)
        with atomic_path(self._mark(stage, block)) as tmp:
            tmp.write_text(json.dumps(list(arrays)))

    def load(self, stage: str, block: Block, name: str, mmap: bool = False) -> np.ndarray:
        """One stored array of a block (memory-mapped with ``mmap``)."""
        return np.load(self._file(stage, block, name), mmap_mode="r" if mmap else None, allow_pickle=False)

    def load_all(self, stage: str, block: Block, prefix: str = "") -> dict[str, np.ndarray]:
        """A block's arrays in ``stage`` (those named under ``prefix``, when given)."""
        names = json.loads(self._mark(stage, block).read_text())
        return {name: self.load(stage, block, name) for name in names if name.startswith(prefix)}

    def load_table(self, stage: str, block: Block, prefix: str, crs) -> gpd.GeoDataFrame:
        """A table stored with :func:`table_arrays` under ``prefix``."""
        return table_from(self.load_all(stage, block, prefix + "."), prefix, crs)

    def _drop_damaged(self) -> int:
        """Read every marked block's arrays; forget the blocks of which one fails, and say how many."""
        damaged = 0
        for mark in sorted(self.dir.glob(f"*{_MARK}")):
            stage, key = mark.name[: -len(_MARK)].split(".", 1)
            try:
                for name in json.loads(mark.read_text()):
                    np.load(self.dir / f"{stage}.{key}.{name}.npy", allow_pickle=False)
            except Exception:  # numpy and json each raise their own kind for a cut or garbled file
                mark.unlink()
                damaged += 1
        return damaged

    def remove(self) -> None:
        """Delete the folder once the run's outputs are complete."""
        shutil.rmtree(self.dir, ignore_errors=True)


def table_arrays(table: gpd.GeoDataFrame, prefix: str) -> dict[str, np.ndarray]:
    """A table's columns and its geometries' WKB as plain arrays named under ``prefix``, for :meth:`BlockStore.save`."""
    wkb = shapely.to_wkb(table.geometry.values, hex=False) if len(table) else np.zeros(0, object)
    sizes = np.array([len(w) for w in wkb], np.int64)
    arrays = {f"{prefix}.{column}": table[column].to_numpy() for column in table.columns if column != table.geometry.name}
    arrays[f"{prefix}.{_GEOMETRY}"] = np.frombuffer(b"".join(wkb), np.uint8)
    arrays[f"{prefix}.{_OFFSETS}"] = np.concatenate([[0], np.cumsum(sizes)])
    return arrays


def table_from(arrays: dict[str, np.ndarray], prefix: str, crs) -> gpd.GeoDataFrame:
    """The table :func:`table_arrays` stored, its columns in their order."""
    raw, offsets = arrays[f"{prefix}.{_GEOMETRY}"].tobytes(), arrays[f"{prefix}.{_OFFSETS}"]
    geometry = shapely.from_wkb([raw[a:b] for a, b in zip(offsets[:-1], offsets[1:])]) if len(offsets) > 1 else []
    columns = {name[len(prefix) + 1 :]: values for name, values in arrays.items()
               if name.startswith(prefix + ".") and not name.endswith((_GEOMETRY, _OFFSETS))}
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geometry, crs=crs), crs=crs)
