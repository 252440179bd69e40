"""A stage of an analysis: its kernel over the blocks not yet stored, on threads here or on a Dask cluster.

A kernel is a picklable callable (a module-level function, or a ``functools.partial`` of one with
records: paths, grids, parameters) that takes a block and returns its arrays; the engine stores
them in the run's :class:`~canopy.blockwise.store.BlockStore` where the kernel ran, so a Dask task
carries a path and a window and returns nothing (the store's folder must be shared with the
workers, as ``predict``'s is). The caller reads what it needs back from the store, block by block.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np

from canopy.blockwise.store import BlockStore
from canopy.grid import Block
from canopy.io.gdal_env import bound_gdal_cache_for_this_process

Kernel = Callable[[Block], dict[str, np.ndarray]]
"""What one block computes in a stage: its arrays by name."""

log = logging.getLogger(__name__)

_IN_FLIGHT_PER_THREAD = 2
"""Blocks submitted ahead per thread: enough to keep every thread busy, few enough to bound memory."""


def run_stage(stage: str, kernel: Kernel, blocks: Sequence[Block], store: BlockStore, client=None,
              threads: int | None = None, on_done: Callable[[Block], None] | None = None) -> int:
    """Compute and store ``stage`` for the blocks that do not have it yet.

    Parameters
    ----------
    stage
        The stage's name (no dot); its blocks are stored under it.
    kernel
        What one block computes.
    blocks
        The blocks of the run.
    store
        The run's store; blocks already in it for this stage are skipped (a resumed run).
    client
        A ``distributed.Client`` to run on; None for threads in this process.
    threads
        Threads in this process (without a client); default the cores, at most 4.
    on_done
        Called in this process for each block stored: first those already in the store, then each as it is
        computed (in any order).

    Returns
    -------
    int
        The blocks computed (not taken from the store).

    Raises
    ------
    Exception
        What a kernel raised, the first one (a worker's, with its own type).
    """
    todo = [b for b in blocks if not store.has(stage, b)]
    log.info("%s: %d blocks to compute, %d kept from an earlier run", stage, len(todo), len(blocks) - len(todo))
    if on_done is not None:
        pending = set(todo)
        for block in blocks:
            if block not in pending:
                on_done(block)
    if client is None:
        count = threads or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(count, thread_name_prefix=f"canopy-{stage}") as pool:
            _bounded(todo, lambda b: pool.submit(compute_and_store, kernel, store.dir, stage, b),
                     _IN_FLIGHT_PER_THREAD * count, on_done, _first_done_local)
        return len(todo)
    width = _IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))
    token = uuid.uuid4().hex[:12]  # a run's own task names, never an earlier run's cached result
    _bounded(todo, lambda b: client.submit(_compute_on_worker, kernel, str(store.dir), stage, b, pure=False,
                                           key=f"canopy-{stage}-{b.key}-{token}"),
             width, on_done, _first_done_dask)
    return len(todo)


def compute_and_store(kernel: Kernel, folder, stage: str, block: Block) -> None:
    """Run a kernel on one block and store its arrays (in the process that ran it)."""
    BlockStore.attach(folder).save(stage, block, kernel(block))


def _compute_on_worker(kernel: Kernel, folder, stage: str, block: Block) -> None:
    """:func:`compute_and_store` in a Dask worker, whose GDAL block cache is bounded for as long as it lives (GDAL's
    default, 5 % of the machine's memory per process, would grow with the map)."""
    bound_gdal_cache_for_this_process()
    compute_and_store(kernel, folder, stage, block)


def _bounded(todo: Sequence[Block], submit, width: int, on_done, first_done) -> None:
    """Submit blocks keeping at most ``width`` in flight; raise the first failure after cancelling the rest."""
    flying: deque = deque()
    pending = iter(todo)
    try:
        for block in pending:
            flying.append((block, submit(block)))
            while len(flying) >= width:
                _collect(flying, first_done, on_done)
        while flying:
            _collect(flying, first_done, on_done)
    finally:
        for _, future in flying:
            future.cancel()


def _collect(flying: deque, first_done, on_done) -> None:
    """Wait until a submitted block is done, take the finished ones off, and report them."""
    first_done([f for _, f in flying])
    for item in [item for item in flying if item[1].done()]:
        flying.remove(item)
        item[1].result()
        if on_done is not None:
            on_done(item[0])


def _first_done_local(futures) -> None:
    wait(futures, return_when=FIRST_COMPLETED)


def _first_done_dask(futures) -> None:
    from distributed import wait as dask_wait

    dask_wait(futures, return_when="FIRST_COMPLETED")
