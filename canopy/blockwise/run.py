"""One analysis run on the block engine: the output's lock, the store of finished blocks, the cluster, and GDAL's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canopy.blockwise.execute import Kernel, run_stage
from canopy.blockwise.store import BlockStore
from canopy.cluster import ClusterSpec, client_for
from canopy.grid import Block
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
