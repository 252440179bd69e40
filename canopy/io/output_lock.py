"""One run at a time per output: a lock beside ``--out``, and the temporaries and scratch folders that killed runs left, removed."""

from __future__ import annotations

import fcntl
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from canopy.errors import OutputPathError
from canopy.io.atomic import temporaries

log = logging.getLogger(__name__)

SIDECARS = (".qml", ".png")
"""Files written beside an output, whose temporaries are cleaned up too."""


def _scratch_prefix(out: Path) -> str:
    """How the scratch folders of ``out`` begin: hidden, and named for it, so the next run of ``out`` finds them."""
    return f".{out.name}.scratch-"


@contextmanager
def output_lock(out: Path, written: Iterable[Path] = ()) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out`` for a run; remove the stale temporaries of ``out``, its sidecars and
    the other files the run writes, and the scratch folders (:func:`scratch_folder`) of ``out``.

    The lock is an OS file lock, released even when the process is killed, so holding it means no
    other live run writes ``out``: the temporaries (``.<name>.*.tmp<suffix>``) and scratch folders
    that remain are leftovers of killed runs.

    Parameters
    ----------
    out
        The run's output (a file, or the folder it fills).
    written
        The other files it writes (beside it, or inside the folder), whose temporaries are removed too.

    Raises
    ------
    OutputPathError
        If another run holds the lock.

    .. versionchanged:: 0.3.0
       ``written``, and scratch folders.
    """
    path = out.parent / f".{out.name}.lock"
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputPathError(f"Another canopy run is writing {out} now; wait for it to finish or choose another --out.") from None
    try:
        for target in (out, *(out.with_suffix(s) for s in SIDECARS), *written):
            for stale in temporaries(target):
                log.info("removing %s, left by a run that was stopped", stale)
                stale.unlink(missing_ok=True)
        for stale in out.parent.glob(f"{_scratch_prefix(out)}*"):
            log.info("removing %s, left by a run that was stopped", stale)
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def scratch_folder(out: Path | None) -> tempfile.TemporaryDirectory:
    """A hidden scratch folder beside ``out`` (on its disk), removed at the end, or by the next run under
    :func:`output_lock` if this one is killed; in the system's temporary folder when there is no ``out``."""
    if out is None:
        return tempfile.TemporaryDirectory(prefix="canopy-")
    return tempfile.TemporaryDirectory(prefix=_scratch_prefix(out), dir=out.parent)
