"""A plan made ready in one process: its model placed on its device, its sources open, reading blocks and predicting chips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from canopy.models.height_model import LoadedModel, is_quantized, load_height_model
from canopy.models.weights import ProgressCallback
from canopy.runtime.device import precision_name, select_device, select_precision
from canopy.runtime.inference import ChipPredictor, auto_batch_size
from canopy.runtime.numerics import numerics_tag
from canopy.runtime.plan import ModelIdentity, RunPlan
from canopy.io.partial import ChipHeights
from canopy.runtime.stitch import predict_chips
from canopy.tiling.block_input import BlockInput, read_block
from canopy.grid import Block


@dataclass(frozen=True)
class PlacedModel:
    """A plan's model loaded once in a process, with the device and autocast dtype it runs in, resolved once with it."""

    loaded: LoadedModel
    device: torch.device
    autocast: torch.dtype | None


def load_model(plan: RunPlan, progress: ProgressCallback | None = None) -> PlacedModel:
    """The plan's model, loaded for its device, with the region's aerial normalisation folded in, and its precision.

    Raises
    ------
    CanopyError
        As :func:`~canopy.models.height_model.load_height_model`, or for a device or precision not available here.
    """
    device = select_device(plan.device)
    loaded = load_height_model(plan.model, offline=plan.offline, progress=progress, device=device)
    if plan.input_affine is not None:
        loaded.model.set_input_affine(*plan.input_affine)
    return PlacedModel(loaded, device, select_precision(device, plan.precision, quantized=is_quantized(loaded.model)))


class BlockWorker:
    """Reads a plan's blocks and predicts their chips with a placed model, in this process.

    The plan's sources are opened here once (they stay open for the plan; its owner closes them).

    Parameters
    ----------
    plan
        The run plan.
    placed
        Its model, from :func:`load_model`.

    Raises
    ------
    CanopyError
        If a source cannot be opened here.
    """

    def __init__(self, plan: RunPlan, placed: PlacedModel) -> None:
        self.plan = plan
        device, loaded = placed.device, placed.loaded
        self.predictor = ChipPredictor(loaded.model, device, placed.autocast, plan.uncertainty, plan.tta)
        self.batch_size = plan.batch_size or auto_batch_size(device, plan.layout.size)
        self.identity = ModelIdentity(loaded.backbone_weights, loaded.head_weights, precision_name(placed.autocast), device.type,
                                      numerics_tag(device, torch.get_num_threads(), self.batch_size))
        self._fill = np.asarray(plan.model.spec.normalization.mean, np.float32)
        self.sources = plan.sources.open()

    def read(self, block: Block) -> BlockInput:
        """The imagery under a block and its chips."""
        return read_block(self.sources, self.plan.grid, block, self.plan.layout, self._fill)

    def chips(self, inp: BlockInput) -> ChipHeights:
        """Predict the chips a block owns."""
        return predict_chips(inp, self.plan.layout, self.predictor, self.batch_size)
