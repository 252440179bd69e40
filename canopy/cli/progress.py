"""Progress bars for the command line (the library itself never prints)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from canopy.prediction import Progress


@contextlib.contextmanager
def block_progress(quiet: bool) -> Iterator:
    """A callback showing blocks done, area done (km²) and time left, or None when ``quiet``."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="block", desc="predicting", dynamic_ncols=True)

    def update(p: Progress) -> None:
        bar.total = p.blocks_total
        bar.n = p.blocks_done
        bar.set_postfix_str(f"{p.km2_done:.3f}/{p.km2_total:.3f} km²", refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


@contextlib.contextmanager
def download_progress(quiet: bool) -> Iterator:
    """A callback showing a weights download, or None when ``quiet``."""
    if quiet:
        yield None
        return
    bar = None

    def update(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="downloading weights")
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
