"""The model applied to batches of chips, on a device and in a precision."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from canopy.models.height_model import is_quantized


def auto_batch_size(device: torch.device, chip_size: int) -> int:
    """Chips per model call when none is asked for: the fastest measured per device (``docs/benchmarks.md``).

    On the CPU the time per chip hardly changes from 1 to 8 chips a call, so 4 keeps memory low;
    a GPU needs larger batches to fill it: 32 chips of 256 px, scaled by chip area, within 4..128.
    """
    if device.type == "cuda":
        return int(min(128, max(4, 32 * (256 / chip_size) ** 2)))
    return 4


class ChipPredictor:
    """Call a height model on numpy chips (B, 3, S, S) in [0, 1] and get heights (B, S, S) in metres.

    On CUDA, chips go to the GPU from pinned host memory without blocking and heights come back
    into pinned memory, so copies overlap the GPU's work.

    An int8 (dynamically quantised) model runs one chip per call: its layers scale their input by
    the largest value in the whole tensor, so in a batch a chip's heights would depend on which
    chips share it (by up to 1.4 m). Alone, each chip gets its own scale, exactly as when Meta's code
    runs that chip, and a batch gives the same bits as its chips one by one.

    Parameters
    ----------
    model
        Maps (B, 3, S, S) to (B, 1, S, S).
    device
        Where to run it.
    autocast
        The autocast dtype, or None for fp32.
    """

    def __init__(self, model: nn.Module, device: torch.device, autocast: torch.dtype | None = None) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.autocast = autocast
        self.chips_done = 0
        self._chip_by_chip = is_quantized(model)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """Heights for a batch of chips."""
        cuda = self.device.type == "cuda"
        x = torch.from_numpy(chips)
        x = (x.pin_memory() if cuda else x).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
        ):
            if self._chip_by_chip:
                y = torch.cat([self.model(x[i : i + 1]) for i in range(len(x))])[:, 0].float()
            else:
                y = self.model(x)[:, 0].float()
        self.chips_done += len(chips)
        if not cuda:
            return y.cpu().numpy()
        host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(y, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy()
