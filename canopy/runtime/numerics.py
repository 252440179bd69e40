"""What decides a map's last bits besides its request, and how far maps made differently may disagree.

The same request in the same configuration (machine, PyTorch build, threads, batch size, block size)
gives the same bytes. Across configurations the kernels PyTorch, oneDNN and MKL choose differ (by
CPU instruction set, thread count and batch shape) and round differently, so heights agree within
a bound, measured in ``docs/benchmarks.md`` and stated in the README, not to the bit.
"""

from __future__ import annotations

import os

import torch

AGREEMENT_BOUND_M = {"fp32": 1e-4, "bf16": 0.5, "fp16": 0.5}
"""How far (metres) heights of one request may differ across configurations, by precision.

fp32: worst case measured 3e-5 m on heights up to 59 m. bf16 rounds every matrix product's inputs to
8 bits of mantissa, and which products are fused differs by kernel: measured up to 0.31 m. fp16 is
given bf16's bound, unmeasured.
"""


def numerics_tag(device: torch.device, threads: int, batch_size: int) -> str:
    """The configuration a map's last bits depend on: PyTorch build, the CPU kernels it dispatches to or the
    GPU, threads and batch size; e.g. ``torch 2.13.0+cpu; cpu AVX512 avx512-bf16; 2 threads; batch 4``."""
    if device.type == "cuda":
        where = f"cuda {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"{device.type} {_cpu_kernels()}"
    return f"torch {torch.__version__}; {where}; {threads} threads; batch {batch_size}"


def _cpu_kernels() -> str:
    """The CPU instruction set PyTorch's kernels use here, with the matrix extensions oneDNN may use."""
    extras = [name for name, probe in (("avx512-bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))
              if getattr(torch.cpu, probe, lambda: False)()]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if isa:
        extras.append(f"oneDNN<={isa}")
    return " ".join([torch.backends.cpu.get_cpu_capability(), *extras])
