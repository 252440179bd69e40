"""Reading checkpoints safely, DINOv2's in any of their published key layouts, and loading them strictly.

Layouts understood:

- ``meta``: Meta's ``.pth`` state dicts (``blocks.N.attn.qkv``, ``ls1.gamma``, ``pos_embed``, ...).
- ``hf``: Hugging Face ``facebook/dinov2-*`` safetensors as published (``embeddings.*``,
  ``encoder.layer.N.attention.attention.query|key|value``, ``attention.output.dense``,
  ``layer_scale1.lambda1``, ``layernorm``).
- ``hf-proj``: files saved by current ``transformers`` releases, whose attention projections are
  ``attention.q_proj|k_proj|v_proj|o_proj``.

Everything is converted to the ``meta`` layout, which is what :class:`DinoVisionTransformer` uses;
DINOv3 backbones and CHMv2 heads have their own layouts (:mod:`canopy.models.dinov3_checkpoint`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import nn

from canopy.errors import CheckpointFormatError, UnsafeCheckpointError, WeightsMismatchError

StateDict = dict[str, torch.Tensor]

_WRAPPER_KEYS = ("state_dict", "model", "teacher", "module")
_PREFIXES = ("module.", "backbone.", "dinov2.", "encoder.backbone.")
_HF_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale1\.lambda1$", r"blocks.\1.ls1.gamma"),
    (r"^encoder\.layer\.(\d+)\.layer_scale2\.lambda1$", r"blocks.\1.ls2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"^layernorm\.", "norm."),
]
# Projections that Hugging Face keeps apart and Meta fuses: (pattern, fused name, parts in fused order).
_HF_FUSED = [
    (
        re.compile(r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$"),
        "blocks.{}.attn.qkv.{}",
        ("q", "k", "v"),
    ),
    (
        re.compile(r"^encoder\.layer\.(\d+)\.mlp\.(gate_proj|up_proj)\.(weight|bias)$"),
        "blocks.{}.mlp.w12.{}",
        ("g", "u"),
    ),
]


_PACKED = "._packed_params._packed_params"


def quantized_layers(state: Mapping[str, object]) -> set[str]:
    """Names of the dynamically quantised linear layers (packed int8 weights) of a raw state dict."""
    return {k[: -len(_PACKED)] for k in state if k.endswith(_PACKED)}


def is_dynamically_quantized(state: Mapping[str, object]) -> bool:
    """Whether a raw state dict holds dynamically quantised linear layers (packed int8 weights)."""
    return bool(quantized_layers(state))


def dequantize(state: Mapping[str, object]) -> StateDict:
    """Turn the packed int8 linear layers of a dynamically quantised state dict into float ``weight``/``bias``.

    A quantised linear layer ``L`` is stored as ``L.scale``, ``L.zero_point``,
    ``L._packed_params.dtype`` and ``L._packed_params._packed_params`` = (int8 weight, float bias);
    other layers are stored as usual.
    """
    quantized = quantized_layers(state)
    packed_extras = {f"{base}.{suffix}" for base in quantized for suffix in ("scale", "zero_point")}
    out: StateDict = {}
    for key, value in state.items():
        if key.endswith(_PACKED):
            base = key[: -len(_PACKED)]
            weight, bias = value
            out[f"{base}.weight"] = weight.dequantize()
            if bias is not None:
                out[f"{base}.bias"] = bias.detach()
        elif isinstance(value, torch.Tensor) and key not in packed_extras:
            out[key] = value
    return out


def read_state_dict(path: str | Path) -> StateDict:
    """Read a checkpoint file into a flat dict of float tensors without unpickling arbitrary objects.

    Dynamically quantised layers are dequantised (see :func:`read_checkpoint` for the raw entries).

    Safetensors files are read directly; anything else goes through ``torch.load`` with
    ``weights_only=True``. A training-framework wrapper (``{"state_dict": ...}``, ``{"model": ...}``)
    is unwrapped.

    Parameters
    ----------
    path
        A ``.safetensors`` or ``.pth``/``.pt`` file.

    Returns
    -------
    dict of str to Tensor

    Raises
    ------
    UnsafeCheckpointError
        If the file holds pickled objects other than tensors and plain containers.
    CheckpointFormatError
        If the file is not a checkpoint at all, or holds no tensors.
    """
    return dequantize(read_checkpoint(path))


def read_checkpoint(path: str | Path) -> dict[str, object]:
    """Read a checkpoint's state dict as stored: tensors, and for quantised layers their packed
    parameters and dtypes. Safetensors files are read directly; anything else goes through
    ``torch.load(weights_only=True)``, which allows tensors (quantised ones included), plain
    containers and dtypes and refuses any other pickled object.

    Raises
    ------
    UnsafeCheckpointError, CheckpointFormatError
        As :func:`read_state_dict`.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(16)
    is_pickle_zip = head.startswith(b"PK")
    is_legacy_pickle = head[:1] == b"\x80"
    if not (is_pickle_zip or is_legacy_pickle):
        try:
            return load_safetensors(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointFormatError(
                f"Weights file {path} is neither safetensors nor a PyTorch checkpoint ({exc}); "
                "check that the download finished and the path is right."
            ) from None
    obj = _load_weights_only(path, mmap=is_pickle_zip)
    return _unwrap(obj, path)


# Training frameworks pickle their own containers beside the weights (PyTorch Lightning's
# ``AttributeDict`` of hyper-parameters in the checkpoints Meta published). ``weights_only`` refuses
# any class it does not know; for these modules only, the class is read as a plain dict, which runs
# no code from the file. Anything else stays refused.
_FRAMEWORK_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
_UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def _load_weights_only(path: Path, mmap: bool) -> object:
    """``torch.load(weights_only=True)``, reading training-framework containers as plain dicts; memory-mapped where the
    format allows (zip archives), so tensors are not copied twice on their way into the model."""
    aliases: list[tuple[type, str]] = []
    for _ in range(10):
        try:
            with torch.serialization.safe_globals(aliases):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            match = _UNSUPPORTED.search(str(exc))
            if match and match.group(1).startswith(_FRAMEWORK_MODULES) and (dict, match.group(1)) not in aliases:
                aliases.append((dict, match.group(1)))
                continue
            reason = match.group(1) if match else str(exc).splitlines()[-1].strip()
            raise UnsafeCheckpointError(
                f"Weights file {path} holds pickled Python objects that canopy refuses to unpickle "
                f"({reason}); use the official checkpoint or a safetensors file."
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointFormatError(
                f"Weights file {path} could not be read as a PyTorch checkpoint ({exc}); it may be truncated."
            ) from None
    raise UnsafeCheckpointError(f"Weights file {path} needs too many unknown classes to be read safely.")


def _unwrap(obj: object, path: Path) -> dict[str, object]:
    """Descend into training-framework wrappers until a state dict is found."""
    while isinstance(obj, Mapping) and not any(isinstance(v, (torch.Tensor, tuple)) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"Weights file {path} holds a {type(obj).__name__}, not a state dict.")
    entries = {k: v for k, v in obj.items() if isinstance(v, (torch.Tensor, tuple, torch.dtype))}
    if not any(isinstance(v, torch.Tensor) or k.endswith(_PACKED) for k, v in entries.items()):
        raise CheckpointFormatError(f"Weights file {path} holds no tensors.")
    return entries


def strip_prefix(state: StateDict) -> StateDict:
    """Drop a prefix shared by every key, such as ``module.`` or ``dinov2.``.

    Parameters
    ----------
    state
        A state dict.

    Returns
    -------
    dict of str to Tensor
    """
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Name the key layout of a DINOv2 state dict.

    Parameters
    ----------
    state
        A state dict, prefixes already stripped.

    Returns
    -------
    str
        ``"meta"``, ``"hf"`` or ``"hf-proj"``.

    Raises
    ------
    CheckpointFormatError
        If the keys match none of the DINOv2 layouts.
    """
    keys = set(state)
    if "pos_embed" in keys or any(k.startswith("blocks.") for k in keys):
        return "meta"
    if any(".attention.q_proj." in k for k in keys):
        return "hf-proj"
    if any(".attention.attention.query." in k for k in keys) or "embeddings.cls_token" in keys:
        return "hf"
    sample = ", ".join(sorted(keys)[:3])
    raise CheckpointFormatError(f"The checkpoint's keys ({sample}, ...) match no DINOv2 layout.")


def to_meta_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert a DINOv2 state dict in any published layout to Meta's layout.

    Parameters
    ----------
    state
        A state dict in the ``meta``, ``hf`` or ``hf-proj`` layout, possibly under a common prefix.

    Returns
    -------
    dict of str to Tensor
        The same tensors under Meta's names, with separate query/key/value fused into ``qkv``.
    """
    state = strip_prefix(dict(state))
    if detect_layout(state) == "meta":
        return state
    converted: StateDict = {}
    fused: dict[str, tuple[tuple[str, ...], dict[str, torch.Tensor]]] = {}
    for key, value in state.items():
        for pattern, template, order in _HF_FUSED:
            match = pattern.match(key)
            if match:
                layer, part, kind = match.groups()
                fused.setdefault(template.format(layer, kind), (order, {}))[1][part[0]] = value
                break
        else:
            new_key = key
            for pattern_text, replacement in _HF_RENAMES:
                new_key, count = re.subn(pattern_text, replacement, new_key)
                if count:
                    break
            if new_key == "mask_token" and value.dim() == 3:
                value = value.reshape(1, -1)
            converted[new_key] = value
    for name, (order, parts) in fused.items():
        if set(parts) != set(order):
            raise CheckpointFormatError(
                f"The checkpoint lacks parts {sorted(set(order) - set(parts))} of {name}; it is incomplete."
            )
        converted[name] = torch.cat([parts[p] for p in order], dim=0)
    return converted


def describe_variant(state: Mapping[str, torch.Tensor]) -> str:
    """Say which DINOv2 variant a Meta-layout state dict's shapes suggest, e.g. ``ViT-B/14 with 4 registers``."""
    names = {384: "S", 768: "B", 1024: "L", 1536: "g"}
    if "cls_token" not in state:
        return "an unrecognised model"
    dim = state["cls_token"].shape[-1]
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    patch = state["patch_embed.proj.weight"].shape[-1] if "patch_embed.proj.weight" in state else "?"
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    label = f"ViT-{names.get(dim, f'{dim}d')}/{patch} ({depth} blocks)"
    return label + (f" with {registers} registers" if registers else "")


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def built_empty(build: Callable[[], ModuleT]) -> ModuleT:
    """A module built without initialising its weights, for weights that are loaded next (strictly, every one).

    Built on PyTorch's meta device and then given uninitialised memory on the CPU: a ViT-L's random
    initialisation alone takes seconds, its checkpoint a tenth of that. Every parameter and buffer
    holds garbage until the strict load fills it.
    """
    with torch.device("meta"):
        module = build()
    return module.to_empty(device="cpu")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], expected: str, source: str) -> None:
    """Load a Meta-layout state dict into ``model`` strictly, explaining any mismatch.

    Parameters
    ----------
    model
        The backbone to fill.
    state
        Its weights in Meta's layout.
    expected
        The registry name of the variant being loaded, for messages.
    source
        Where the weights came from, for messages.

    Raises
    ------
    WeightsMismatchError
        If keys are missing or unexpected, or a shape differs; the message names the variant
        expected, the variant the file's shapes suggest, and the first offending keys.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                more = f" and {len(items) - 3} more" if len(items) > 3 else ""
                problems.append(f"{label}: {', '.join(items[:3])}{more}")
        raise WeightsMismatchError(
            f"Weights from {source} do not fit {expected}: the file looks like {describe_variant(state)}; "
            f"{'; '.join(problems)}. Pass weights made for {expected}, or choose the model that matches them."
        )
    # The file's own tensors (memory-mapped) become the model's where their type is the model's: no copy, and Dask
    # workers on one machine share one copy in the page cache. Other types are converted by copying.
    same_type = all(state[k].dtype == own[k].dtype and state[k].device.type == "cpu" for k in own)
    model.load_state_dict(state, strict=True, assign=same_type)


def split_model_checkpoint(state: Mapping[str, torch.Tensor], source: str) -> tuple[StateDict, StateDict]:
    """Split a whole-model checkpoint into its backbone (``backbone.*``) and head (``decode_head.*``
    in Meta's files, ``head.*`` in Hugging Face's) parts.

    A prefix shared by every key (such as ``chm_module_.``) is dropped first.

    Raises
    ------
    WeightsMismatchError
        If the file lacks either part: it is then a backbone-only or foreign checkpoint.
    """
    keys = list(state)
    common = keys[0].split(".", 1)[0] + "." if keys else ""
    if common not in ("backbone.", "decode_head.", "head.") and all(k.startswith(common) for k in keys):
        state = {k[len(common) :]: v for k, v in state.items()}
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    head = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(("decode_head.", "head."))}
    if not backbone or not head:
        missing = "backbone.*" if not backbone else "decode_head.*"
        raise WeightsMismatchError(
            f"Weights from {source} hold no {missing} keys; this model needs the whole published checkpoint "
            "(backbone and decode_head)."
        )
    return backbone, head
