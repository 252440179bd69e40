"""One run at a time per output: a lock beside ``--out``, and the temporaries that killed runs left, removed."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from canopy.errors import OutputPathError
from canopy.io.atomic import temporaries

log = logging.getLogger(__name__)

SIDECARS = (".qml", ".png")
"""Files written beside an output, whose temporaries are cleaned up too."""


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``out`` for a run; remove the stale temporaries of ``out`` and its sidecars.

    The lock is an OS file lock, released even when the process is killed, so holding it means no
    other live run writes ``out``: the temporaries (``.<name>.*.tmp<suffix>``) that remain are
    leftovers of killed runs.

    Raises
    ------
    OutputPathError
        If another run holds the lock.
    """
    path = out.parent / f".{out.name}.lock"
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputPathError(f"Another canopy run is writing {out} now; wait for it to finish or choose another --out.") from None
    try:
        for target in (out, *(out.with_suffix(s) for s in SIDECARS)):
            for stale in temporaries(target):
                log.info("removing %s, left by a run that was stopped", stale)
                stale.unlink(missing_ok=True)
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
