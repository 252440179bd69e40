"""Atomic file writes: write beside the target under a temporary name, rename at the end."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def temporaries(target: Path) -> list[Path]:
    """The temporary files :func:`atomic_path` makes for ``target`` that are still there (left by killed processes,
    unless one is writing now)."""
    return sorted(target.parent.glob(f".{target.name}.*.tmp{target.suffix}"))


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``, on failure delete it.

    The temporary file is in the same directory, so the rename is atomic: ``target`` either does
    not exist or is complete. It gets the permissions a newly created file would (mkstemp's are private).
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
