"""Device and precision choice."""

from __future__ import annotations

import pytest
import torch

from canopy.errors import DeviceError
from canopy.runtime.device import precision_name, select_device, select_precision


def test_auto_device_and_precision_on_this_machine():
    device = select_device("auto")
    expected = "cuda" if torch.cuda.is_available() else device.type
    assert device.type == expected
    if device.type == "cpu":
        assert select_precision(device, "auto") is None


def test_named_precisions():
    cpu = torch.device("cpu")
    assert select_precision(cpu, "fp32") is None
    assert select_precision(cpu, "bf16") is torch.bfloat16
    assert precision_name(torch.bfloat16) == "bf16" and precision_name(None) == "fp32"
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        select_precision(cpu, "fp16")
    with pytest.raises(DeviceError, match="not one of"):
        select_precision(cpu, "int4")
    with pytest.raises(DeviceError, match="not one of"):
        select_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        select_device("cuda")


@pytest.mark.gpu
def test_cuda_bf16_is_the_auto_precision():
    device = select_device("cuda")
    assert select_precision(device, "auto") is torch.bfloat16
