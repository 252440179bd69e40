"""A 1x1 convolution whose result on the CPU does not depend on how many threads PyTorch has."""

from __future__ import annotations

import torch
from torch import nn

# PyTorch runs 1x1 convolutions of up to 15 float32 images on the CPU with oneDNN when it has several
# threads, and with its own kernel when it has one (unless the input is a single small image); the
# two round differently. Here the single-threaded case calls the oneDNN kernel too.
_ONEDNN_BELOW_BATCH = 16
_NATIVE_UP_TO_NUMEL = 20480


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a 1x1 kernel (same parameters, same state-dict keys) that gives the same bits
    with one thread as with several: a map computed by single-threaded Dask workers then equals,
    byte for byte, one computed by a multi-threaded process.

    Parameters
    ----------
    in_channels, out_channels
        Channels in and out.
    bias
        Whether to add a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution, through oneDNN where PyTorch would choose it with more than one thread."""
        if (
            torch.get_num_threads() == 1
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and x.shape[0] < _ONEDNN_BELOW_BATCH
            and (x.shape[0] > 1 or x.numel() > _NATIVE_UP_TO_NUMEL)
        ):
            channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # as PyTorch keeps it
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1)
        return super().forward(x)
