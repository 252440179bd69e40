"""A plan made ready in one process: its sources opened and its model loaded, reading blocks and predicting chips."""

from __future__ import annotations

import numpy as np
import torch

from canopy.models.height_model import LoadedModel, is_quantized, load_height_model
from canopy.models.weights import ProgressCallback
from canopy.runtime.device import precision_name, select_device, select_precision
from canopy.runtime.inference import ChipPredictor, auto_batch_size
from canopy.runtime.numerics import numerics_tag
from canopy.runtime.plan import ModelIdentity, RunPlan, open_source
from canopy.io.partial import Chips
from canopy.stitch import predict_chips
from canopy.tiling.block_input import BlockInput, read_block
from canopy.grid import Block


def load_model(plan: RunPlan, progress: ProgressCallback | None = None) -> LoadedModel:
    """The plan's model, loaded for its device, with the region's aerial normalisation folded in.

    Raises
    ------
    CanopyError
        As :func:`~canopy.models.height_model.load_height_model`, or for a device not available here.
    """
    device = select_device(plan.device)
    loaded = load_height_model(plan.model, offline=plan.offline, progress=progress, device=device)
    if plan.input_affine is not None:
        loaded.model.set_input_affine(*plan.input_affine)
    return loaded


class BlockWorker:
    """Reads a plan's blocks and predicts their chips with a loaded model, in this process.

    Parameters
    ----------
    plan
        The run plan.
    loaded
        Its model, from :func:`load_model`.

    Raises
    ------
    CanopyError
        If the device or precision is not available here, or a source cannot be opened.
    """

    def __init__(self, plan: RunPlan, loaded: LoadedModel) -> None:
        self.plan = plan
        device = select_device(plan.device)
        autocast = select_precision(device, plan.precision, quantized=is_quantized(loaded.model))
        self.predictor = ChipPredictor(loaded.model, device, autocast)
        self.batch_size = plan.batch_size or auto_batch_size(device, plan.layout.size)
        self.identity = ModelIdentity(loaded.backbone_weights, loaded.head_weights, precision_name(autocast), device.type,
                                      numerics_tag(device, torch.get_num_threads(), self.batch_size))
        self._fill = np.asarray(plan.model.spec.normalization.mean, np.float32)
        self.sources = []
        try:
            for source in plan.sources:
                self.sources.append(open_source(source))
        except BaseException:
            self.close()
            raise

    def read(self, block: Block) -> BlockInput:
        """The imagery under a block and its chips."""
        return read_block(self.sources, self.plan.grid, block, self.plan.layout, self._fill)

    def chips(self, inp: BlockInput) -> Chips:
        """Predict the chips a block owns."""
        return predict_chips(inp, self.plan.layout, self.predictor, self.batch_size)

    def close(self) -> None:
        """Close the sources."""
        for source in self.sources:
            source.close()
