"""Generate DINOv2 checkpoints with the published key layouts and random values, for loading tests."""

from __future__ import annotations

import re

import torch


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial random values, so that a swapped or skipped key shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight")):
                param.copy_(1.0 + 0.1 * noise)
            elif "lambda1" in name or name.endswith("gamma"):
                param.copy_(0.5 + 0.1 * noise)
            else:
                param.copy_(0.05 * noise)
    return module


def hf_to_meta_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-key a Hugging Face DINOv2 state dict (published or q_proj layout) into Meta's layout.

    Written independently of canopy's converter so each checks the other.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    swiglu: dict[str, dict[str, torch.Tensor]] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.mask_token": "mask_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    for key, value in state.items():
        if key in simple:
            out[simple[key]] = value.reshape(1, -1) if key.endswith("mask_token") else value
            continue
        n, rest = re.match(r"encoder\.layer\.(\d+)\.(.*)", key).groups()
        m = re.match(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)", rest)
        if m:
            qkv.setdefault(f"blocks.{n}.attn.qkv.{m.group(2)}", {})[m.group(1)[0]] = value
            continue
        m = re.match(r"mlp\.(gate_proj|up_proj)\.(weight|bias)", rest)
        if m:
            swiglu.setdefault(f"blocks.{n}.mlp.w12.{m.group(2)}", {})[m.group(1)] = value
            continue
        rest = (
            rest.replace("attention.output.dense", "attn.proj")
            .replace("attention.o_proj", "attn.proj")
            .replace("layer_scale1.lambda1", "ls1.gamma")
            .replace("layer_scale2.lambda1", "ls2.gamma")
            .replace("mlp.weights_in", "mlp.w12")
            .replace("mlp.weights_out", "mlp.w3")
            .replace("mlp.down_proj", "mlp.w3")
        )
        out[f"blocks.{n}.{rest}"] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    for key, parts in swiglu.items():
        out[key] = torch.cat([parts["gate_proj"], parts["up_proj"]])
    return out
