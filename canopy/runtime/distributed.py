"""Blocks computed on a Dask distributed cluster: a local one started here, or an existing one.

Each block is two tasks. The first reads the block's imagery and predicts the chips it owns (the
model's work, with no dependency on other blocks); the second blends the block from its own chips
and those handed on by the blocks above, to the left and above-left, once their first tasks are
done. Both write into the run's partial folder beside the output, which every worker must see
(shared storage), and the client alone assembles the COG from it; so the client holds no pixels,
only a bounded window of small futures, whatever the region's size.

A worker process loads the model once, on its first task of a run, and keeps it for every block it
computes (the plan travels with the tasks; weights never do). Tasks are idempotent, so the blocks of
a worker that dies are recomputed elsewhere with the same bytes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from canopy.errors import BlockFailedError, CanopyError, DistributedError, ImageryReadError
from canopy.io.partial import PartialRun
from canopy.models.height_model import LoadedModel
from canopy.request import ClusterSpec
from canopy.runtime.block_worker import BlockWorker, load_model
from canopy.runtime.device import Device, Precision, select_device
from canopy.runtime.plan import ModelIdentity, RunPlan
from canopy.stitch import BorderChips, blend, border_chips
from canopy.tiling.blocks import Block

log = logging.getLogger(__name__)

_IN_FLIGHT_PER_THREAD = 4
"""Blocks submitted ahead per worker thread: enough to keep workers busy, few enough to bound the client."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@contextmanager
def connect(cluster: ClusterSpec, on_start: Callable[[str], None] | None = None) -> Iterator:
    """A Dask client for a cluster spec: a local cluster of worker processes started here, or an existing cluster.

    Parameters
    ----------
    cluster
        ``workers`` (and ``threads_per_worker``, default cores / workers) starts a local cluster on
        127.0.0.1 that is closed on exit; ``scheduler`` or ``scheduler_file`` connects to a running one.
    on_start
        Called with the dashboard's address when a local cluster has started.

    Yields
    ------
    distributed.Client

    Raises
    ------
    DistributedError
        If the scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster

    if cluster.workers is not None:
        threads = cluster.threads_per_worker or max(1, (os.cpu_count() or 1) // cluster.workers)
        with LocalCluster(n_workers=cluster.workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:8787") as local, Client(local) as client:
            if on_start is not None:
                on_start(client.dashboard_link)
            log.info("local Dask cluster of %d workers x %d threads, dashboard %s", cluster.workers, threads, client.dashboard_link)
            yield client
        return
    where = cluster.scheduler or cluster.scheduler_file
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        client = (Client(cluster.scheduler, timeout=timeout) if cluster.scheduler
                  else Client(scheduler_file=cluster.scheduler_file, timeout=timeout))
    except (OSError, TimeoutError, ValueError) as exc:
        raise DistributedError(
            f"Cannot reach the Dask scheduler at {where} ({exc}); start one (`dask scheduler`) or check the address."
        ) from exc
    with client:
        yield client


class DaskEngine:
    """Computes a plan's blocks on a Dask cluster.

    Parameters
    ----------
    plan
        The run plan; it must be picklable (GeoTIFF sources are, as records).
    client
        A connected ``distributed.Client``.

    Raises
    ------
    CanopyError
        If a worker cannot load the model or open the imagery; the message names the worker.
    """

    def __init__(self, plan: RunPlan, client) -> None:
        self.plan = plan
        self.client = client
        self._token = uuid.uuid4().hex[:12]
        self._blocks: dict[str, Block] = {}
        future = client.submit(_describe, plan, key=f"canopy-describe-{self._token}", pure=False)
        self.identity, caught = self._result(future, None, None)
        for message, category in caught:
            warnings.warn(message, category, stacklevel=3)
        # every worker runs what the first chose for "auto", so a mixed cluster cannot mix devices or precisions
        self.plan = replace(plan, device=Device(self.identity.device), precision=Precision(self.identity.precision))
        self._plan = client.submit(_hold, self.plan, key=f"canopy-plan-{self._token}", pure=False)

    def run(self, partial: PartialRun, todo: Sequence[Block], on_done: Callable[[Block], None]) -> int:
        """Compute ``todo`` into ``partial`` on the cluster; return how many chips were predicted.

        Raises
        ------
        BlockFailedError
            If a block kills its worker as often as the cluster allows; finished blocks stay for ``--resume``.
        DistributedError
            If the scheduler is lost.
        """
        from distributed import as_completed

        client, plan, directory = self.client, self._plan, str(partial.dir)
        limit = _IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))
        chips: dict[tuple[int, int], object] = {}
        blended = as_completed()
        total = 0
        step = self.plan.block_size
        try:
            for block in todo:
                self._blocks.update({self._key("chips", block): block, self._key("blend", block): block})
                own = client.submit(_chips_task, plan, directory, block, key=self._key("chips", block), pure=False)
                earlier = [chips.get(at) for at in ((block.row - step, block.col - step), (block.row - step, block.col), (block.row, block.col - step))]
                done = client.submit(_blend_task, plan, directory, block, own, *[f for f in earlier if f is not None],
                                     key=self._key("blend", block), priority=1, pure=False)
                chips[block.row, block.col] = own
                for at in [at for at in chips if at[0] < block.row - step]:
                    del chips[at]
                blended.add(done)
                while blended.count() >= limit:
                    total += self._finish(next(blended), partial, on_done)
            for future in blended:
                total += self._finish(future, partial, on_done)
        except BaseException:
            self._cancel([*chips.values(), *blended.futures])
            raise
        return total

    def close(self) -> None:
        """Release the plan held on the cluster."""
        self._cancel([self._plan])

    def _key(self, kind: str, block: Block) -> str:
        """A task key naming the block, so the dashboard and errors can say which block a task is."""
        return f"canopy-{kind}-{block.key}-{self._token}"

    def _finish(self, future, partial: PartialRun, on_done: Callable[[Block], None]) -> int:
        """Wait for a block's blend task, report it, and return its chip count."""
        block = self._blocks[future.key]
        count = self._result(future, block, partial)
        for kind in ("chips", "blend"):  # both of its tasks succeeded: no error can name them any more
            del self._blocks[self._key(kind, block)]
        on_done(block)
        return count

    def _result(self, future, block: Block | None, partial: PartialRun | None):
        """A task's result, its failures as canopy errors."""
        from distributed import KilledWorker

        try:
            return future.result()
        except CanopyError:
            raise
        except KilledWorker as exc:
            raise self._killer(exc, block, partial) from exc
        except (CancelledError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            raise DistributedError(
                f"Lost the Dask scheduler ({reason}); the blocks already finished are kept: run again with --resume."
            ) from exc

    def _killer(self, exc, block: Block | None, partial: PartialRun | None) -> BlockFailedError:
        """The error for tasks that killed their workers, naming the block that did.

        Dask fails every task that was on a dying worker, bystanders too, so the block is the one
        whose task was started most often and never finished (recorded in the partial folder).
        """
        failed, workers = self._blocks.get(exc.task, block), [exc.last_worker.address]
        attempts = partial.unfinished_attempts() if partial is not None else {}
        if attempts:
            name, workers = next(iter(attempts.items()))
            failed = next((b for b in self._blocks.values() if b.key == name.split(".")[0]), failed)
        if failed is None:
            return BlockFailedError(
                f"Loading the model killed Dask worker {workers[-1]}; look at the worker's log (memory, the weights file)."
            )
        return BlockFailedError(
            f"Computing block {failed.key} (rows {failed.row}-{failed.row + failed.height - 1}, columns {failed.col}-"
            f"{failed.col + failed.width - 1} of the output grid) killed its Dask worker {len(workers)} times (last "
            f"{workers[-1]}); the blocks already finished are kept: look at the workers' logs, remove the cause and run "
            "again with --resume."
        )
    def _cancel(self, futures: list) -> None:
        """Cancel futures, quietly if the cluster is already gone."""
        try:
            self.client.cancel([f for f in futures if f is not None])
        except Exception:  # the scheduler may be the thing that failed
            log.debug("cancelling futures failed", exc_info=True)


# ---- on the workers ----------------------------------------------------------------------------

_LOCK = threading.Lock()
_MODEL_CALLS = threading.Lock()  # one model call at a time per process, on all its threads
_MODEL: dict[bytes, LoadedModel] = {}
_WORKER: dict[int, tuple[RunPlan, BlockWorker]] = {}
_LOADS = 0


def model_loads() -> int:
    """How many times this process has loaded a model for a distributed run (what tests count)."""
    return _LOADS


def _hold(plan: RunPlan) -> RunPlan:
    """The plan as a task result, so every worker fetches it once and Dask can recompute it if lost."""
    return plan


def _threads() -> int:
    """This worker's thread count, which PyTorch's thread pool uses too."""
    from distributed import get_worker

    try:
        return get_worker().state.nthreads
    except (ValueError, AttributeError):
        return torch.get_num_threads()


def _block_worker(plan: RunPlan) -> BlockWorker:
    """This process's ready worker for ``plan``: the model loaded once per model, sources opened once per plan.

    Only the latest model and plan are kept, so a long-lived worker serving many runs holds one of each.
    """
    global _LOADS
    model_key = pickle.dumps((plan.model, select_device(plan.device).type, plan.offline, plan.input_affine))
    with _LOCK:
        cached = _WORKER.get(id(plan))
        if cached is not None and cached[0] is plan:  # the plan is held here, so its id is not reused
            return cached[1]
        if model_key not in _MODEL:
            _MODEL.clear()
            _undo_nanny_malloc_trim()
            _MODEL[model_key] = load_model(plan)
            _LOADS += 1
        for _, old in _WORKER.values():
            old.close()
        _WORKER.clear()
        try:
            worker = BlockWorker(plan, _MODEL[model_key])
        except ImageryReadError as exc:
            raise ImageryReadError(
                f"On Dask worker {_address()}: {exc} Local paths must be visible to every worker at the same path "
                "(shared storage), or use URLs."
            ) from exc
        _WORKER[id(plan)] = (plan, worker)
        return worker


def _undo_nanny_malloc_trim() -> None:
    """Give this worker process glibc's usual malloc thresholds back, where a Dask nanny set ``MALLOC_TRIM_THRESHOLD_``.

    The nanny sets it (64 kB) before it starts a worker, to hand memory back to the system sooner;
    it also pins glibc's mmap threshold at 128 kB, so every large tensor PyTorch allocates becomes
    a fresh mapping paid in page faults: the model ran a third slower (docs/benchmarks.md). These
    are the thresholds glibc itself settles on in a process that frees large blocks (32 and 64 MB).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)


def _address() -> str:
    """This worker's address, for messages."""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return f"process {os.getpid()}"


def _describe(plan: RunPlan) -> tuple[ModelIdentity, list[tuple[str, type]]]:
    """Load the model on a worker (kept for its blocks) and say what ran, with the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        identity = _block_worker(plan).identity
    return identity, [(str(w.message), w.category) for w in caught]


def _chips_task(plan: RunPlan, directory: str, block: Block) -> int:
    """Predict the chips a block owns and store them in the partial folder; return how many."""
    torch.set_num_threads(_threads())
    partial = PartialRun.attach(directory)
    partial.start_attempt(f"{block.key}.chips", _address())
    worker = _block_worker(plan)
    inp = worker.read(block)
    with _MODEL_CALLS:
        own = worker.chips(inp)
    handed = border_chips(block, plan.layout, own, plan.grid.shape)
    partial.write_border(block.key, handed)
    partial.write_inner(block.key, {at: h for at, h in own.items() if at not in handed}, np.ascontiguousarray(inp.block_valid))
    partial.end_attempt(f"{block.key}.chips")
    return len(own)


def _blend_task(plan: RunPlan, directory: str, block: Block, own_count: int, *earlier: int) -> int:
    """Blend a block from its own chips and those its earlier neighbours handed on, and store it; return its chip count."""
    partial = PartialRun.attach(directory)
    if partial.is_done(block):  # a retry after the worker that finished it died before saying so
        return own_count
    partial.start_attempt(f"{block.key}.blend", _address())
    inner, valid = partial.read_inner(block.key)
    borders = BorderChips(plan.block_size, plan.grid.shape, partial.read_border)
    chips = {**borders.around(block), **inner, **partial.read_border(block.key)}
    partial.write_block(block, blend(block, plan.layout, chips, valid), plan.grid)
    partial.end_attempt(f"{block.key}.blend")
    return own_count
