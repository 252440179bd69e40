"""One analysis run on the block engine: the output's lock, the store of finished blocks, the cluster, and GDAL's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from canopy.blockwise.execute import Kernel, run_stage
from canopy.blockwise.layout import BlockLayout
from canopy.blockwise.store import BlockStore
from canopy.cluster import ClusterSpec, client_for
from canopy.grid import Block, OutputGrid
from canopy.io.atomic import atomic_path
from canopy.io.cog import HEIGHTS, Band, StreamingCog
from canopy.io.gdal_env import run_env
from canopy.io.output_lock import output_lock, scratch_folder
from canopy.io.partial import partial_folder


@dataclass
class BlockRun:
    """A run in progress: where its blocks are kept and where they are computed.

    ``store`` is the folder of finished blocks (beside the output, kept after a failure for
    ``--resume``); ``client`` a Dask client, or None for threads in this process; ``scratch`` a
    folder for the run's other temporaries, on the output's disk.
    """

    store: BlockStore
    client: Any
    scratch: Path

    def stage(self, name: str, kernel: Kernel, blocks: Sequence[Block], on_done: Callable[[Block], None] | None = None) -> int:
        """Compute a stage over the blocks not stored yet (:func:`~canopy.blockwise.execute.run_stage`); return how many."""
        return run_stage(name, kernel, blocks, self.store, self.client, on_done=on_done)

    def raster_stage(self, name: str, kernel: Kernel, layout: BlockLayout, grid: OutputGrid, array: str, target: Path,
                     tags: dict[str, str], band: Band = HEIGHTS) -> np.ndarray:
        """Compute a stage whose kernel stores each block's raster as ``array``, and stream those into a COG written
        atomically at ``target`` as the blocks finish (the one COG writer); return the writer's histogram."""
        read = lambda block: self.store.load(name, block, array, mmap=True)  # noqa: E731
        with StreamingCog(grid, layout.blocks, layout.block_size, read, self.scratch, band=band) as cog:
            self.stage(name, kernel, layout.blocks, on_done=cog.block_done)
            with atomic_path(target) as tmp:
                return cog.finish(tmp, tags)

    def shareable(self, raster):
        """A height map the run's tasks can read: itself here, its file on a cluster (a DataArray written once to the
        scratch folder, never copied into every task)."""
        return raster if self.client is None else raster.shareable(self.scratch)


@contextmanager
def block_run(out: Path | None, fingerprint: dict[str, Any], *, written: Iterable[Path] = (), resume: bool = False,
              client=None, cluster: ClusterSpec | None = None) -> Iterator[BlockRun]:
    """Open a run: hold ``out``'s lock, open its store beside it, connect its cluster; on success remove the store.

    Parameters
    ----------
    out
        The run's main output; None keeps everything in a temporary folder (no resume).
    fingerprint
        What decides the run's results (inputs, parameters, block size).
    written
        The other files the run writes, whose temporaries a killed run left are removed.
    resume
        Reuse the blocks a killed run with the same fingerprint stored.
    client, cluster
        A Dask client, or a cluster to connect to for the run; neither for threads in this process.

    Yields
    ------
    BlockRun

    Raises
    ------
    OutputPathError
        If another run writes ``out`` now.
    ResumeError
        If ``resume`` is set and the stored blocks were made with other settings.
    DistributedError
        If the cluster cannot be reached.
    """
    with ExitStack() as stack:
        if out is not None:
            stack.enter_context(output_lock(out, written))
        scratch = Path(stack.enter_context(scratch_folder(out)))
        store = BlockStore(scratch / "blocks" if out is None else partial_folder(out), fingerprint, resume)
        connected = stack.enter_context(client_for(client, cluster))
        stack.enter_context(run_env())
        yield BlockRun(store, connected, scratch)
        store.remove()
