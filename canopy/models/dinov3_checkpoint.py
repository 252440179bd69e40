"""DINOv3 backbones and CHMv2 heads in their published key layouts, converted to Meta's.

Backbone layouts:

- ``meta``: Meta's ``.pth`` files (``cls_token``, ``storage_tokens``, ``mask_token``,
  ``rope_embed.periods``, ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv.{weight, bias,
  bias_mask}, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``). The SAT-493M
  ViT-L also holds ``local_cls_norm``, a norm used only on local crops in training: it is dropped.
- ``hf``: ``transformers``' ``DINOv3ViTModel`` (``embeddings.{cls_token, mask_token,
  register_tokens, patch_embeddings}``, ``layer.N`` or ``model.layer.N`` with separate
  ``attention.{q,k,v,o}_proj``, ``layer_scale1.lambda1``, ``mlp.{up,down}_proj``, ``norm``). Such
  files store no RoPE periods (they are made from the base, as ``transformers`` does) and a key bias
  only when the configuration has one; the key bias is taken as stored (zero when absent).

CHMv2 head layouts: ``meta``, the published head file, whose keys are the DPT head's own names; and
``hf``, ``CHMv2ForDepthEstimation``'s ``head.*`` (``reassemble_stage``, ``fusion_layers``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from canopy.errors import CheckpointFormatError
from canopy.models.checkpoint import StateDict, strip_prefix
from canopy.models.layers.rope import rope_periods
from canopy.models.registry import BackboneSpec

_LAYER = r"^(?:model\.)?layer\.(\d+)\."
_BACKBONE_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "storage_tokens"),
    (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
    (_LAYER + r"attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (_LAYER + r"mlp\.up_proj\.", r"blocks.\1.mlp.fc1."),
    (_LAYER + r"mlp\.down_proj\.", r"blocks.\1.mlp.fc2."),
    (_LAYER + r"(norm[12])\.", r"blocks.\1.\2."),
]
_QKV = re.compile(_LAYER + r"attention\.([qkv])_proj\.(weight|bias)$")
_TRAINING_ONLY = ("local_cls_norm.",)

_HEAD_RENAMES = [
    (r"^reassemble_stage\.layers\.(\d+)\.projection\.", r"reassemble_blocks.projects.\1.conv."),
    (r"^reassemble_stage\.layers\.(\d+)\.resize\.", r"reassemble_blocks.resize_layers.\1."),
    (r"^reassemble_stage\.readout_projects\.", "reassemble_blocks.readout_projects."),
    (r"^convs\.(\d+)\.", r"convs.\1.conv."),
    (r"^fusion_layers\.(\d+)\.projection\.", r"fusion_blocks.\1.project.conv."),
    (r"^fusion_layers\.(\d+)\.residual_layer(\d)\.convolution(\d)\.", r"fusion_blocks.\1.res_conv_unit\2.conv\3.conv."),
]


def _rename(key: str, renames: list[tuple[str, str]]) -> str:
    """The first rename that matches ``key``, applied; the key itself when none does."""
    for pattern, replacement in renames:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    return key


def detect_dinov3_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Name the key layout of a DINOv3 backbone state dict: ``"meta"`` or ``"hf"``.

    Raises
    ------
    CheckpointFormatError
        If the keys match neither.
    """
    if "storage_tokens" in state or "rope_embed.periods" in state or any(k.startswith("blocks.") for k in state):
        return "meta"
    if "embeddings.cls_token" in state:
        return "hf"
    raise CheckpointFormatError(f"The checkpoint's keys ({', '.join(sorted(state)[:3])}, ...) match no DINOv3 layout.")


def dinov3_to_meta_layout(state: Mapping[str, torch.Tensor], spec: BackboneSpec) -> StateDict:
    """Convert a DINOv3 backbone state dict in either published layout to Meta's.

    Parameters
    ----------
    state
        The backbone's tensors, possibly under a common prefix such as ``backbone.``.
    spec
        The architecture, whose ``rope_base`` gives the RoPE periods of a file that stores none.

    Returns
    -------
    dict of str to Tensor
        Meta's names; ``qkv`` fused from the separate projections with a bias mask of ones, so the
        stored key bias (or zero) is applied as it is.
    """
    state = strip_prefix(dict(state))
    if detect_dinov3_layout(state) == "meta":
        return {k: v for k, v in state.items() if not k.startswith(_TRAINING_ONLY)}
    out: StateDict = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _QKV.match(key)
        if match:
            layer, which, kind = match.groups()
            parts.setdefault(f"blocks.{layer}.attn.qkv.{kind}", {})[which] = value
            continue
        new_key = _rename(key, _BACKBONE_RENAMES)
        out[new_key] = value.reshape(1, -1) if new_key == "mask_token" else value
    for name, got in parts.items():
        if name.endswith(".bias") and "k" not in got and "q" in got:
            got["k"] = torch.zeros_like(got["q"])
        if set(got) != {"q", "k", "v"}:
            raise CheckpointFormatError(f"The checkpoint lacks parts {sorted({'q', 'k', 'v'} - set(got))} of {name}; it is incomplete.")
        out[name] = torch.cat([got["q"], got["k"], got["v"]])
        if name.endswith(".bias") and spec.mask_k_bias:
            out[name.replace(".bias", ".bias_mask")] = torch.ones_like(out[name])
    out["rope_embed.periods"] = rope_periods(spec.embed_dim // spec.num_heads, spec.rope_base)
    return out


def chmv2_head_to_meta_layout(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert a CHMv2 head state dict (Meta's head file, or the ``head.*`` part of the Hugging Face model) to Meta's names."""
    state = dict(state)
    if any(k.startswith("reassemble_stage.") for k in state):
        return {_rename(k, _HEAD_RENAMES): v for k, v in state.items()}
    return state
