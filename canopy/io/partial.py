"""A run in progress: finished blocks kept as raw float32 arrays (``.npy``) in a hidden folder beside the output.

Blocks are stored uncompressed: their pixels are compressed once, into the final COG's tiles, as
the run streams (:mod:`canopy.io.cog`); the folder needs 4 bytes per output pixel until the run ends.
Each block is written under a temporary name and renamed, so a run killed at any moment leaves
only whole blocks; ``--resume`` reuses them when the run's settings (its fingerprint) are the same.
With ``--uncertainty`` a block's spread is kept beside its heights (``<key>.spread.npy``, written
first). Beside each block, the chips it hands on to its neighbours (``<key>.border.npz``) are written
first, so that a resumed run blends the blocks it still has to compute with exactly the chips the
earlier run computed. A distributed run, which predicts a block's chips and blends it in two
tasks, also keeps the block's other chips and validity (``<key>.inner.npz``) in between.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from canopy.errors import (
    DamagedPartialWarning,
    ResumeError,
    ResumeNumericsWarning,
    warn,
)
from canopy.grid import Block
from canopy.io.atomic import atomic_path

log = logging.getLogger(__name__)

ChipHeights = dict[tuple[int, int], np.ndarray]
"""Chip heights (S, S) in metres by the chip's origin (row, col) in grid coordinates."""

class Blended(NamedTuple):
    """A blended block: heights (m), and with ``--uncertainty`` their spread (m), both float32 (height, width), NaN
    where there is no imagery.

    The spread is the standard deviation of the mixture the blend stands for: the chips covering a
    pixel, weighted as in the blend, each with its own predicted distribution, so
    ``spread² = Σ w_i (v_i + (h_i - h)²) / Σ w_i`` with h_i a chip's height, v_i its variance
    and h the blended height: where the chips agree and predict no spread of their own it is zero.
    """

    heights: np.ndarray
    spread: np.ndarray | None = None


_NUMERICS = "canopy_numerics"  # the one fingerprint entry a resume may change (with a warning)


def partial_folder(out: Path) -> Path:
    """The hidden folder beside ``out`` that holds its run's finished blocks until it is complete."""
    return out.parent / f".{out.name}.partial"


def open_run_folder(folder: Path, fingerprint: dict[str, Any], resume: bool, drop_damaged: Callable[[], int],
                    bound_m: float = 0.0) -> None:
    """Keep the blocks in ``folder`` when resuming a run with the same fingerprint; otherwise empty it and record
    ``fingerprint`` in its manifest.

    Parameters
    ----------
    folder
        The run's folder of finished blocks.
    fingerprint
        Everything that decides the output; ``canopy_numerics`` (the configuration) may change on a resume.
    resume
        Keep an earlier run's blocks.
    drop_damaged
        Deletes the kept blocks that cannot be read whole and says how many (they are computed again).
    bound_m
        How far blocks computed in two configurations may differ, for the warning.

    Raises
    ------
    ResumeError
        If ``resume`` is set and the earlier run had other settings.
    """
    manifest = folder / "manifest.json"
    fingerprint = json.loads(json.dumps(fingerprint))
    if resume and manifest.is_file():
        earlier = json.loads(manifest.read_text())
        changed = sorted(k for k in set(earlier) | set(fingerprint) if earlier.get(k) != fingerprint.get(k))
        if changed == [_NUMERICS]:
            warn(
                f"The partial run in {folder} was computed in another configuration ({earlier[_NUMERICS]}) than this "
                f"one ({fingerprint[_NUMERICS]}): the blocks of the two agree within {bound_m:g} m, not byte for byte.",
                ResumeNumericsWarning,
            )
        elif changed:
            raise ResumeError(
                f"The partial run in {folder} was made with other settings ({', '.join(changed)}); "
                "run again without --resume to start afresh."
            )
        damaged = drop_damaged()
        if damaged:
            warn(
                f"The partial run in {folder} held {damaged} damaged block(s) (unreadable or cut short); "
                "they are computed again.",
                DamagedPartialWarning,
            )
        return
    if folder.exists():
        log.info("discarding an earlier partial run in %s", folder)
        shutil.rmtree(folder)
    folder.mkdir()
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True))


class PartialRun:
    """The folder of a run's finished blocks.

    Parameters
    ----------
    out
        The final output path; the folder is ``.<name>.partial`` beside it.
    fingerprint
        Everything that decides the output's pixels; a resumed run must match it, except in
        ``canopy_numerics`` (the configuration: threads, batch size, machine), which it may change.
    resume
        Keep the blocks of an earlier run with the same fingerprint; otherwise start afresh.
    bound_m
        How far heights computed in two configurations may differ, for the warning a resume in
        another configuration gives.

    Raises
    ------
    ResumeError
        If ``resume`` is set and the earlier run had other settings.
    """

    def __init__(self, out: Path, fingerprint: dict[str, Any], resume: bool, bound_m: float = 0.0) -> None:
        self.dir = partial_folder(out)
        open_run_folder(self.dir, fingerprint, resume, self._drop_damaged, bound_m)
        if resume:
            log.info("resuming: %d blocks already done in %s", len(self.done()), self.dir)

    @classmethod
    def attach(cls, directory: str | Path) -> PartialRun:
        """The partial run in ``directory``, made by another process, to write blocks into (a Dask worker's view)."""
        run = cls.__new__(cls)
        run.dir = Path(directory)
        return run

    def _path(self, block: Block) -> Path:
        return self.dir / f"{block.key}.npy"

    def _spread_path(self, block: Block) -> Path:
        return self.dir / f"{block.key}.spread.npy"

    def _border_path(self, key: str) -> Path:
        return self.dir / f"{key}.border.npz"

    def _inner_path(self, key: str) -> Path:
        return self.dir / f"{key}.inner.npz"

    def _drop_damaged(self) -> int:
        """Read every kept block and its handed-on chips in full; delete those that fail, and say how many."""
        damaged = 0
        for key in sorted(self.done()):
            spread = self.dir / f"{key}.spread.npy"
            try:
                np.load(self.dir / f"{key}.npy")
                self.read_border(key)
                if spread.exists():
                    np.load(spread)
            except Exception:  # numpy and zipfile each raise their own kind for a cut or garbled file
                (self.dir / f"{key}.npy").unlink(missing_ok=True)
                spread.unlink(missing_ok=True)
                self._border_path(key).unlink(missing_ok=True)
                damaged += 1
        return damaged

    def done(self) -> set[str]:
        """Keys of the blocks already written, with the chips they hand on."""
        return {p.stem for p in self.dir.glob("r*_c*.npy") if self._border_path(p.stem).is_file()}

    def write(self, block: Block, data: Blended, border: ChipHeights) -> None:
        """Store one block's heights (and spread) and the chips it hands on, each atomically, the chips first."""
        self.write_border(block.key, border)
        self.write_block(block, data)

    def write_border(self, key: str, border: ChipHeights) -> None:
        """Store, atomically, the chips block ``key`` hands on to later blocks."""
        _save_chips(self._border_path(key), border)

    def write_inner(self, key: str, inner: ChipHeights, valid: np.ndarray) -> None:
        """Store, atomically, a block's chips that stay inside it and its pixels' validity, until it is blended."""
        _save_chips(self._inner_path(key), inner, valid=np.packbits(valid), shape=np.array(valid.shape))

    def read_inner(self, key: str) -> tuple[ChipHeights, np.ndarray]:
        """The chips and validity :meth:`write_inner` stored."""
        with np.load(self._inner_path(key)) as stored:
            shape = tuple(stored["shape"])
            valid = np.unpackbits(stored["valid"], count=shape[0] * shape[1]).reshape(shape).astype(bool)
            return _chips_from(stored), valid

    def write_block(self, block: Block, data: Blended) -> None:
        """Store one block's spread (if any) and then its heights, each atomically (its chips must be stored first), and
        drop its inner chips: a block whose heights are stored is whole."""
        if data.spread is not None:
            _save_array(self._spread_path(block), data.spread[: block.height, : block.width])
        _save_array(self._path(block), data.heights[: block.height, : block.width])
        self._inner_path(block.key).unlink(missing_ok=True)

    def start_attempt(self, name: str, who: str) -> None:
        """Note that ``who`` starts task ``name`` (e.g. ``r0_c42.chips``): what stays of tasks that killed their process."""
        with open(self.dir / f"{name}.attempts", "a") as log_file:
            log_file.write(who + "\n")

    def end_attempt(self, name: str) -> None:
        """Forget the attempts of task ``name``: it finished."""
        (self.dir / f"{name}.attempts").unlink(missing_ok=True)

    def unfinished_attempts(self) -> dict[str, list[str]]:
        """Tasks started and never finished, with who started them, most attempts first."""
        found = {p.name.removesuffix(".attempts"): p.read_text().split() for p in self.dir.glob("*.attempts")}
        return dict(sorted(found.items(), key=lambda item: -len(item[1])))

    def is_done(self, block: Block) -> bool:
        """Whether a block's heights and the chips it hands on are stored."""
        return self._path(block).is_file() and self._border_path(block.key).is_file()

    def view(self, block: Block) -> np.ndarray:
        """One stored block's heights, memory-mapped."""
        return np.load(self._path(block), mmap_mode="r")

    def view_spread(self, block: Block) -> np.ndarray:
        """One stored block's spread (``--uncertainty``), memory-mapped."""
        return np.load(self._spread_path(block), mmap_mode="r")

    def read_border(self, key: str) -> ChipHeights:
        """The chips block ``key`` handed on, as written by :meth:`write`."""
        with np.load(self._border_path(key)) as stored:
            return _chips_from(stored)

    def remove(self) -> None:
        """Delete the folder once the output is complete."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _save_array(path: Path, data: np.ndarray) -> None:
    """Write a float32 array to an ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(data, np.float32))


def _save_chips(path: Path, chips: ChipHeights, **extra: np.ndarray) -> None:
    """Write chips (origins and heights, in lattice order) and any extra arrays to an ``.npz``, atomically."""
    origins = np.array(sorted(chips), np.int64).reshape(-1, 2)
    heights = np.stack([chips[r, c] for r, c in sorted(chips)]) if chips else np.zeros((0, 0, 0), np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, origins=origins, heights=heights, **extra)


def _chips_from(stored) -> ChipHeights:
    """Chips by origin from a loaded ``.npz`` of :func:`_save_chips`."""
    return {(int(r), int(c)): h for (r, c), h in zip(stored["origins"], stored["heights"])}
