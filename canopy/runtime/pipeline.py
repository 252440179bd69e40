"""The local block pipeline: read the next blocks, compute this one and write the last ones, all at once."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar


from canopy.grid import Block

Input = TypeVar("Input")
Output = TypeVar("Output")


def run_blocks(
    blocks: Sequence[Block],
    read: Callable[[Block], Input],
    compute: Callable[[Input], Output],
    write: Callable[[Block, Output], None],
    on_done: Callable[[Block], None] | None = None,
    prefetch: int = 2,
) -> None:
    """Process blocks with reading and writing overlapped with computing.

    Reading happens ``prefetch`` blocks ahead on one thread and writing on another, while the
    calling thread computes (GDAL and PyTorch release the GIL), so memory holds at most
    ``prefetch`` read blocks, one computing and two being written, whatever the region's size.

    Parameters
    ----------
    blocks
        The blocks to process, in order.
    read, compute, write
        The three stages; an exception in any of them stops the run and is raised here. ``compute``
        runs on the calling thread in block order, so it may rely on the blocks before it.
    on_done
        Called, in block order, once a block's write has finished.
    prefetch
        How many blocks to read ahead.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="canopy-read") as reader, ThreadPoolExecutor(
        1, thread_name_prefix="canopy-write"
    ) as writer:
        reads: deque[Future] = deque(reader.submit(read, b) for b in blocks[:prefetch])
        queued = len(reads)
        writes: deque[tuple[Block, Future]] = deque()
        try:
            for block in blocks:
                data = reads.popleft().result()
                if queued < len(blocks):
                    reads.append(reader.submit(read, blocks[queued]))
                    queued += 1
                writes.append((block, writer.submit(write, block, compute(data))))
                while writes and (len(writes) > 2 or writes[0][1].done()):
                    _finish(writes.popleft(), on_done)
            while writes:
                _finish(writes.popleft(), on_done)
        finally:
            for future in reads:
                future.cancel()


def _finish(item: tuple[Block, Future], on_done: Callable[[Block], None] | None) -> None:
    """Wait for one write and report it."""
    block, future = item
    future.result()
    if on_done is not None:
        on_done(block)
