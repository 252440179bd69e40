"""Trained model files: a height head's weights (safetensors) with what it was trained with.

The file's safetensors metadata records the backbone's registry name and the identity of its
weights (SHA-256, or ``random(seed=N)``), the head's configuration, normalisation, ground
resolution, chip size, a summary of the training data and the validation metrics. A file is only
ever run with the backbone weights it was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors, save_file

from canopy._version import __version__
from canopy.errors import ModelFileError
from canopy.io.atomic import atomic_path
from canopy.models.registry import HeadSpec, ModelSpec, Normalization, get_model_spec

FORMAT = "canopy-height-model/2"


@dataclass(frozen=True)
class ModelFile:
    """A trained head and the record of how it was made."""

    path: Path
    spec: ModelSpec
    backbone_weights: str
    head_state: dict[str, torch.Tensor]
    training: dict[str, Any]
    validation: dict[str, Any]
    sha256: str = ""


def looks_like_model_file(name: str | os.PathLike) -> bool:
    """Whether a ``--model`` value names a file rather than a registry entry."""
    return str(name).endswith(".safetensors") or Path(name).is_file()


def save_model_file(
    path: Path,
    spec: ModelSpec,
    backbone_weights: str,
    head: torch.nn.Module,
    training: dict[str, Any],
    validation: dict[str, Any],
) -> None:
    """Write a trained head and its record atomically.

    Parameters
    ----------
    path
        The model file (``.safetensors``).
    spec
        The model it belongs to: backbone name, head configuration, normalisation, resolution, chip size.
    backbone_weights
        Identity of the backbone weights the head was trained on.
    head
        The trained head.
    training, validation
        Summaries stored as JSON.
    """
    metadata = {
        "format": FORMAT,
        "backbone": spec.backbone_name,
        "backbone_weights": backbone_weights,
        "head": json.dumps(dataclasses.asdict(spec.head)),
        "normalization": json.dumps(dataclasses.asdict(spec.normalization)),
        "ground_resolution": repr(spec.ground_resolution),
        "chip_size": str(spec.chip_size),
        "training": json.dumps(training),
        "validation": json.dumps(validation),
        "canopy_version": __version__,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a trained model file, once: its bytes give the head's tensors, the record and the SHA-256 maps name it by.

    Parameters
    ----------
    path
        A file written by ``canopy train``.

    Returns
    -------
    ModelFile
        Its spec is the backbone's registry spec with the head, normalisation, resolution and chip
        size the file records, named after the file.

    Raises
    ------
    ModelFileError
        If the file does not exist, is not safetensors, or is not a canopy model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist; pass a file from `canopy train` or a name from `canopy models`.")
    try:
        data = path.read_bytes()
        metadata = _safetensors_metadata(data)
        state = load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"Model file {path} is not a safetensors file ({exc}).") from None
    if metadata.get("format") == "canopy-height-model/1":
        raise ModelFileError(
            f"Model file {path} was trained with canopy before 0.2, whose DPT head had another layout; "
            "train it again with `canopy train` (the backbone and data are all it needs)."
        )
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"Model file {path} is not a canopy model file (no '{FORMAT}' record); train one with `canopy train`.")
    try:
        base = get_model_spec(metadata["backbone"])
        head = HeadSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(metadata["head"]).items()})
        norm = {k: tuple(v) for k, v in json.loads(metadata["normalization"]).items()}
        spec = dataclasses.replace(
            base,
            name=path.stem,
            description=f"{base.name} backbone with a head trained by canopy ({path.name})",
            head=head,
            normalization=Normalization(**norm),
            ground_resolution=float(metadata["ground_resolution"]),
            chip_size=int(metadata["chip_size"]),
            backbone_model=base.name,
        )
        return ModelFile(path, spec, metadata["backbone_weights"], state, json.loads(metadata["training"]),
                         json.loads(metadata["validation"]), hashlib.sha256(data).hexdigest())
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"Model file {path} has a damaged record ({exc}); train it again.") from None


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (an 8-byte little-endian length, then that much JSON).

    Raises
    ------
    ValueError
        If the header is not there or not JSON.
    """
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("its header runs past the end of the file")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return header.get("__metadata__") or {}

