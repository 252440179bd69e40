"""Turning a compressed (int8 dynamically quantised) checkpoint into a plain float safetensors file, once.

PyTorch has deprecated quantised tensors, and GPUs and bf16 run float weights: a converted file
loads anywhere without them. The int8 weights are dequantised exactly (``int8 * scale``), so the
converted model is the int8 model's weights in float, not the float model Meta trained before
quantising; the heights differ from the int8 model's by what dynamic quantisation of activations
does (``docs/benchmarks.md`` gives the measured figure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from canopy.errors import CheckpointFormatError
from canopy.io.atomic import atomic_path
from canopy.models.checkpoint import dequantize, quantized_layers, read_checkpoint
from canopy.models.weights import sha256_of

CONVERTED_FROM = "canopy_converted_from"
"""Safetensors metadata key: the SHA-256 of the int8 file a float file was converted from."""


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_to_float` did: the files, the int8 file's SHA-256 and how many layers it dequantised."""

    source: Path
    target: Path
    source_sha256: str
    layers_dequantized: int
    tensors: int


def convert_to_float(source: str | os.PathLike, target: str | os.PathLike) -> Conversion:
    """Write the float32 safetensors equivalent of an int8 dynamically quantised checkpoint.

    Keys keep the checkpoint's own layout (``backbone.*``, ``decode_head.*``), so the file is
    passed to ``--weights`` in place of the original; its metadata records the original's SHA-256,
    which ``predict`` writes into the output's tags.

    Parameters
    ----------
    source
        The compressed checkpoint (e.g. Meta's ``compressed_SSLlarge.pth``).
    target
        The ``.safetensors`` file to write (atomically).

    Returns
    -------
    Conversion

    Raises
    ------
    CheckpointFormatError
        If ``source`` holds no quantised layers (nothing to convert) or ``target`` is not ``.safetensors``.
    UnsafeCheckpointError
        If ``source`` holds pickled objects other than tensors and plain containers.
    """
    source, target = Path(source), Path(target)
    if target.suffix != ".safetensors":
        raise CheckpointFormatError(f"Output {target} must end in .safetensors.")
    raw = read_checkpoint(source)
    quantized = len(quantized_layers(raw))
    if not quantized:
        raise CheckpointFormatError(
            f"Weights file {source} holds no int8 quantised layers, so there is nothing to convert; pass it to --weights as it is."
        )
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in dequantize(raw).items()}
    digest = sha256_of(source)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={CONVERTED_FROM: digest, "format": "pt"})
    return Conversion(source, target, digest, quantized, len(state))


def converted_from(path: str | os.PathLike) -> str | None:
    """The SHA-256 of the int8 file that a safetensors file was converted from, or None for any other file."""
    try:
        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get(CONVERTED_FROM)
    except (SafetensorError, OSError):  # not safetensors: a .pth file is never a conversion
        return None
