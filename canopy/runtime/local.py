"""Blocks computed in this process: read ahead, predict and blend, write behind (see :mod:`canopy.runtime.pipeline`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from canopy.io.partial import PartialRun
from canopy.models.weights import ProgressCallback
from canopy.runtime.block_worker import BlockWorker, load_model
from canopy.runtime.pipeline import run_blocks
from canopy.runtime.plan import RunPlan
from canopy.runtime.stitch import BorderChips, predict_block
from canopy.grid import Block


class LocalEngine:
    """Computes a plan's blocks in this process, the model loaded once.

    Parameters
    ----------
    plan
        The run plan.
    download_progress
        Called while weights download.

    Raises
    ------
    CanopyError
        If the model cannot be loaded, or the device, precision or a source is not available.
    """

    def __init__(self, plan: RunPlan, download_progress: ProgressCallback | None = None) -> None:
        self.plan = plan
        self.worker = BlockWorker(plan, load_model(plan, download_progress))
        self.identity = self.worker.identity

    def run(self, partial: PartialRun, todo: Sequence[Block], on_done: Callable[[Block], None],
            on_chips: Callable[[int], None] | None = None) -> int:
        """Compute ``todo`` in order into ``partial``, saying how many chips each model call did; return the chips predicted."""
        plan, worker = self.plan, self.worker
        borders = BorderChips(plan.block_size, plan.grid.shape, partial.read_border)
        before = worker.predictor.chips_done
        calibrate = None if plan.calibration is None else plan.calibration.apply

        def predict(chips):
            heights = worker.predictor(chips)
            if on_chips is not None:
                on_chips(len(chips))
            return heights

        run_blocks(
            todo,
            read=worker.read,
            compute=lambda inp: predict_block(inp, plan.layout, predict, worker.batch_size, borders, calibrate,
                                               plan.uncertainty),
            write=lambda block, result: partial.write(block, *result),
            on_done=on_done,
        )
        return worker.predictor.chips_done - before

    def close(self) -> None:
        """Nothing to release: the plan's owner closes its sources."""
