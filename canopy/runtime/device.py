"""Choosing the device and the floating-point precision to run the model in."""

from __future__ import annotations

import torch

from canopy.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def select_device(name: str = "auto") -> torch.device:
    """The device for ``name``; ``auto`` picks CUDA, then MPS, then the CPU.

    Raises
    ------
    DeviceError
        If the named device is not available on this machine.
    """
    if name not in DEVICES:
        raise DeviceError(f"Device {name!r} is not one of {', '.join(DEVICES)}.")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("Device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu or auto.")
    if name == "mps" and not has_mps:
        raise DeviceError("Device mps was asked for but is not available here; use --device cpu or auto.")
    return torch.device(name)


def select_precision(device: torch.device, name: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``name`` on ``device``, or None for plain fp32.

    ``auto`` is bf16 on CUDA GPUs that support it well, fp32 everywhere else.

    Raises
    ------
    DeviceError
        If the precision is unknown, or fp16 is asked for on the CPU.
    """
    if name not in PRECISIONS:
        raise DeviceError(f"Precision {name!r} is not one of {', '.join(PRECISIONS)}.")
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if name == "fp32":
        return None
    if name == "fp16" and device.type == "cpu":
        raise DeviceError("Precision fp16 is not supported on the CPU; use fp32 or bf16.")
    return torch.bfloat16 if name == "bf16" else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
