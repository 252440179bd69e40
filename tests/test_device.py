"""Device and precision choice."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import canopy.runtime.device as device_module
from canopy.errors import DeviceError, SlowPrecisionWarning
from canopy.runtime.device import cpu_has_bf16_instructions, precision_name, select_device, select_precision


def _kernel_flags() -> list[str]:
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo here")
    return open("/proc/cpuinfo").read().split()


def test_auto_device_and_precision_on_this_machine(monkeypatch):
    """The real detection (conftest makes auto fp32 for every other test), against the kernel's own flags."""
    monkeypatch.setattr(device_module, "cpu_has_bf16_instructions", cpu_has_bf16_instructions)
    device = select_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    flags = _kernel_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert select_precision(torch.device("cpu"), "auto") is (torch.bfloat16 if native else None)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_and_the_bf16_warning_follow_the_cpu_instructions(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_bf16_instructions", lambda: native)
    cpu = torch.device("cpu")
    assert select_precision(cpu, "auto") is (torch.bfloat16 if native else None)
    assert select_precision(cpu, "auto", quantized=True) is None  # int8 layers are exact only in fp32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert select_precision(cpu, "bf16") is torch.bfloat16
    slow = [w for w in caught if issubclass(w.category, SlowPrecisionWarning)]
    assert len(slow) == (0 if native else 1)
    if slow:
        assert "several times slower than fp32" in str(slow[0].message)
    with pytest.raises(DeviceError, match="cannot run an int8 .* `canopy models convert`"):
        select_precision(cpu, "bf16", quantized=True)


def test_named_precisions():
    cpu = torch.device("cpu")
    assert select_precision(cpu, "fp32") is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPrecisionWarning)
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
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_is_the_auto_precision():
    device = select_device("cuda")
    assert select_precision(device, "auto") is torch.bfloat16


def test_a_run_resolves_its_device_once_and_its_precision_with_the_model(monkeypatch, tmp_path):
    from canopy import predict
    from canopy.runtime import block_worker

    device_module._device_for.cache_clear()
    resolved = []
    select = block_worker.select_precision
    monkeypatch.setattr(block_worker, "select_precision", lambda *a, **k: resolved.append(a) or select(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("a", "b"):
            predict(os.path.join(os.path.dirname(__file__), "..", "canopy", "data", "neon", "TEAK_043_rgb.tif"),
                    (321040.0, 4096740.0, 321050.0, 4096750.0), bbox_crs="EPSG:32611", model="dinov2_vits14",
                    weights="random", chip_size=56, device="cpu", out=tmp_path / f"{name}.tif")
    assert device_module._device_for.cache_info().misses == 1  # this process asked once, for both runs
    assert len(resolved) == 2  # once per run, with its model, not again by the block worker
