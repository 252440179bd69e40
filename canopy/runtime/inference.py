"""The model applied to batches of chips, on a device and in a precision."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ChipPredictor:
    """Call a height model on numpy chips (B, 3, S, S) in [0, 1] and get heights (B, S, S) in metres.

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

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """Heights for a batch of chips."""
        x = torch.from_numpy(chips).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
        ):
            y = self.model(x)
        self.chips_done += len(chips)
        return y[:, 0].float().cpu().numpy()
