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


FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""The test-time flips of ``--tta``: none, left-right, up-down, both (dimensions of a (B, C, H, W) tensor)."""


class ChipPredictor:
    """Call a height model on numpy chips (B, 3, S, S) in [0, 1] and get heights (B, S, S) in metres, or with
    ``moments`` (B, 2, S, S): each pixel's height and the variance (m²) of the chip's predicted height there.

    The variance is that of the chip's predictive distribution: the model's own (a binned head's
    spread over its height bins; zero for a regression head), and with ``tta`` the four flipped
    chips' too. With ``tta`` the chip is predicted as it is and flipped left-right, up-down and
    both (each output flipped back); its height is their mean and its variance the mixture's,
    ``mean(variances) + var(heights)``.

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
    moments
        Also give each pixel's variance (the model must take ``moments=True``, as a HeightModel does).
    tta
        Predict each chip under the four flips of :data:`FLIPS` and average them.
    """

    def __init__(self, model: nn.Module, device: torch.device, autocast: torch.dtype | None = None,
                 moments: bool = False, tta: bool = False) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.autocast = autocast
        self.moments = moments
        self.flips = FLIPS if tta else FLIPS[:1]
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
            members = [self._run(x.flip(dims)).flip(dims) if dims else self._run(x) for dims in self.flips]
            y = _mixture(members)
            y = y if self.moments else y[:, 0]
        self.chips_done += len(chips)
        if not cuda:
            return y.cpu().numpy()
        host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(y, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host.numpy()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The model's float32 output (B, 1 or 2, S, S) for one batch, chip by chip for an int8 model."""
        if self._chip_by_chip:
            return torch.cat([self._call(x[i : i + 1]) for i in range(len(x))])
        return self._call(x)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        """One model call, asking for moments only when they are wanted."""
        return (self.model(x, moments=True) if self.moments else self.model(x)).float()


def _mixture(members: list[torch.Tensor]) -> torch.Tensor:
    """Height and variance (B, 2, S, S) of an equal mixture of members' moments (B, 2, S, S), or the mean height
    (B, 1, S, S) of members that are heights alone; one member as it is."""
    if len(members) == 1:
        return members[0]
    stacked = torch.stack(members)
    mean = stacked[:, :, 0].mean(dim=0)
    if stacked.shape[2] == 1:
        return mean[:, None]
    deviation = stacked[:, :, 0] - mean
    return torch.stack([mean, stacked[:, :, 1].mean(dim=0) + (deviation * deviation).mean(dim=0)], dim=1)
