"""Blocks computed on a Dask distributed cluster (connected by :func:`canopy.cluster.connect`).

Each block is two tasks. The first reads the block's imagery and predicts the chips it owns (the
model's work, with no dependency on other blocks); the second blends the block from its own chips
and those handed on by the blocks above, to the left and above-left, once their first tasks are
done. Both write into the run's partial folder beside the output, which every worker must see
(shared storage), and the client alone assembles the COG from it; so the client holds no pixels,
only a bounded window of small futures, whatever the region's size.

What the tasks do on the workers is in :mod:`canopy.runtime.dask_tasks`: the plan travels with
them, weights never do; each worker process loads the model once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import replace

from canopy.errors import BlockFailedError, CanopyError, DistributedError, warn
from canopy.io.partial import PartialRun
from canopy.runtime.dask_tasks import blend_task, chips_task, describe, hold
from canopy.choices import Device, Precision
from canopy.runtime.plan import RunPlan
from canopy.runtime.stitch import handing_on, needed_after
from canopy.grid import Block

log = logging.getLogger(__name__)

_IN_FLIGHT_PER_THREAD = 4
"""Blocks submitted ahead per worker thread: enough to keep workers busy, few enough to bound the client."""


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
        future = client.submit(describe, plan, key=f"canopy-describe-{self._token}", pure=False)
        self.identity, caught = self._result(future, None, None)
        for message, category in caught:
            warn(message, category)
        # every worker runs what the first chose for "auto", so a mixed cluster cannot mix devices or precisions
        self.plan = replace(plan, device=Device(self.identity.device), precision=Precision(self.identity.precision))
        self._plan = client.submit(hold, self.plan, key=f"canopy-plan-{self._token}", pure=False)

    def run(self, partial: PartialRun, todo: Sequence[Block], on_done: Callable[[Block], None],
            on_chips: Callable[[int], None] | None = None) -> int:
        """Compute ``todo`` into ``partial`` on the cluster; return how many chips were predicted.

        Progress is reported by whole blocks (``on_done``); ``on_chips`` is not called.

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
                own = client.submit(chips_task, plan, directory, block, key=self._key("chips", block), pure=False)
                earlier = [chips[at] for at in handing_on(block, step) if at in chips]  # the others were done before
                done = client.submit(blend_task, plan, directory, block, own, *earlier,
                                     key=self._key("blend", block), priority=1, pure=False)
                chips[block.row, block.col] = own
                for at in [at for at in chips if not needed_after(at, block, step)]:
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
        except OSError as exc:  # TimeoutError included
            if future.status != "error":  # not raised by the task: the connection to the cluster failed
                raise self._lost() from exc
            raise DistributedError(
                f"A Dask worker could not read or write a file of the run ({exc}); the folder of --out (CANOPY_SCRATCH "
                "for a run without one), the imagery and the weights cache must be visible to every worker at the same path."
            ) from exc
        except CancelledError as exc:
            raise self._lost() from exc

    def _lost(self) -> DistributedError:
        """The error for a run whose scheduler went away, in one plain sentence (Dask's own words stay in the chain)."""
        address = getattr(getattr(self.client, "scheduler", None), "address", None) or "the cluster"
        return DistributedError(
            f"Lost the Dask scheduler at {address} (the connection closed); the blocks already finished are kept: "
            "run again with --resume once it is back."
        )

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
