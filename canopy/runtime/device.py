"""Choosing the device and the floating-point precision to run the model in."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from canopy.choices import Device, Precision
from canopy.errors import DeviceError, SlowPrecisionWarning, warn


def select_device(name: str = "auto") -> torch.device:
    """The device for ``name``; ``auto`` picks CUDA, then MPS, then the CPU. Resolved once per process.

    Raises
    ------
    DeviceError
        If the named device is not available on this machine.
    """
    return _device_for(Device.parse(name))


@functools.cache
def _device_for(name: Device) -> torch.device:
    """:func:`select_device` for a parsed name, once per process (what is available does not change while it runs)."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("Device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu or auto.")
    if name == "mps" and not has_mps:
        raise DeviceError("Device mps was asked for but is not available here; use --device cpu or auto.")
    return torch.device(name)


@functools.cache
def cpu_has_bf16_instructions() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX512-BF16), detected at run time.

    Asks PyTorch's own CPU probe (what its kernels dispatch on), else the kernel's CPU flags.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(bool(p()) for p in probes)
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(device: torch.device, name: str = "auto", quantized: bool = False) -> torch.dtype | None:
    """The autocast dtype for ``name`` on ``device``, or None for plain fp32.

    ``auto`` is bf16 where it is both fast and accurate (see ``docs/benchmarks.md``): CUDA GPUs
    that support it, and CPUs with bf16 matrix instructions (AMX-BF16 or AVX512-BF16); fp32
    elsewhere, and always for int8 models on the CPU, whose quantised layers take fp32 only and
    are exact only in fp32. ``bf16`` on a CPU without those instructions warns that it is several
    times slower than fp32.

    Parameters
    ----------
    device
        Where the model runs.
    name
        ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    quantized
        Whether the model holds int8 dynamically quantised layers.

    Raises
    ------
    DeviceError
        If the precision is unknown, fp16 is asked for on the CPU, or bf16/fp16 for an int8 model on the CPU.
    """
    name = Precision.parse(name)
    cpu = device.type == "cpu"
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if cpu and not quantized and cpu_has_bf16_instructions() else None
    if name == "fp32":
        return None
    if cpu and quantized:
        raise DeviceError(
            f"Precision {name} cannot run an int8 (compressed) model on the CPU, whose quantised layers take fp32 only; "
            "use --precision fp32, or convert the file to float with `canopy models convert`."
        )
    if name == "fp16" and cpu:
        raise DeviceError("Precision fp16 is not supported on the CPU; use fp32 or bf16.")
    if name == "bf16" and cpu and not cpu_has_bf16_instructions():
        warn(
            "Precision bf16 on this CPU, which has no bf16 matrix instructions (AMX-BF16 or AVX512-BF16), "
            "runs several times slower than fp32; use --precision fp32 or auto.",
            SlowPrecisionWarning,
        )
    return torch.bfloat16 if name == "bf16" else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
