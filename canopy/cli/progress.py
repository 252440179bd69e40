"""Progress bars for the command line (the library itself never prints)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from canopy.prediction import Progress


@contextlib.contextmanager
def block_progress(quiet: bool) -> Iterator:
    """A callback showing area done (km², moving with the chips within a block), time left, blocks and chips;
    or None when ``quiet``. The bar appears with the first report, once the run has started."""
    if quiet:
        yield None
        return
    bar = None

    def update(p: Progress) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=p.km2_total, unit="km²", desc="predicting", dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} km² [{elapsed}<{remaining}{postfix}]")
        bar.n = p.km2_done
        bar.set_postfix_str(f"{p.blocks_done}/{p.blocks_total} blocks, {p.chips_done} chips", refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
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
