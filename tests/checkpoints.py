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


def dinov3_hf_to_meta_keys(state: dict[str, torch.Tensor], head_dim: int, base: float = 100.0) -> dict[str, torch.Tensor]:
    """Re-key a transformers DINOv3 backbone state dict (``layer.N`` or ``model.layer.N``) into Meta's layout.

    As Meta's files have them: the RoPE periods stored, ``qkv`` fused with a key bias that is not
    zero but masked off by ``bias_mask``, and the SAT model's training-only ``local_cls_norm``.
    Written independently of canopy's converter so each checks the other.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.register_tokens": "storage_tokens",
        "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
        "norm.weight": "norm.weight",
        "norm.bias": "norm.bias",
    }
    for key, value in state.items():
        if key == "embeddings.mask_token":
            out["mask_token"] = value.reshape(1, -1)
            continue
        if key in simple:
            out[simple[key]] = value
            continue
        n, rest = re.match(r"(?:model\.)?layer\.(\d+)\.(.*)", key).groups()
        m = re.match(r"attention\.([qkv])_proj\.(weight|bias)", rest)
        if m:
            qkv.setdefault(f"blocks.{n}.attn.qkv.{m.group(2)}", {})[m.group(1)] = value
            continue
        rest = (
            rest.replace("attention.o_proj", "attn.proj")
            .replace("layer_scale1.lambda1", "ls1.gamma")
            .replace("layer_scale2.lambda1", "ls2.gamma")
            .replace("mlp.up_proj", "mlp.fc1")
            .replace("mlp.down_proj", "mlp.fc2")
        )
        out[f"blocks.{n}.{rest}"] = value
    for key, parts in qkv.items():
        if key.endswith("bias"):
            parts.setdefault("k", torch.full_like(parts["q"], 0.3))  # a stored key bias that the mask must cancel
            dim = parts["q"].shape[0]
            out[key.replace("bias", "bias_mask")] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    out["rope_embed.periods"] = base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
    dim = out["cls_token"].shape[-1]
    out["local_cls_norm.weight"], out["local_cls_norm.bias"] = torch.ones(dim), torch.zeros(dim)
    return out


def chmv2_hf_head_to_meta_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-key the ``head.*`` part of a transformers CHMv2 state dict into the names of Meta's head file."""
    out = {}
    for key, value in state.items():
        key = key[len("head.") :]
        key = re.sub(r"^reassemble_stage\.layers\.(\d)\.projection\.", r"reassemble_blocks.projects.\1.conv.", key)
        key = re.sub(r"^reassemble_stage\.layers\.(\d)\.resize\.", r"reassemble_blocks.resize_layers.\1.", key)
        key = key.replace("reassemble_stage.readout_projects.", "reassemble_blocks.readout_projects.")
        key = re.sub(r"^convs\.(\d)\.", r"convs.\1.conv.", key)
        key = re.sub(r"^fusion_layers\.(\d)\.projection\.", r"fusion_blocks.\1.project.conv.", key)
        key = re.sub(r"^fusion_layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.", r"fusion_blocks.\1.res_conv_unit\2.conv\3.conv.", key)
        out[key] = value
    return out


CHMV2_META_HEAD = "dinov3_vitl16_chmv2_dpt_head-3703d643.pth"
CHMV2_META_BACKBONE = "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"


def save_chmv2_layouts(hf_model: torch.nn.Module, folder) -> dict[str, object]:
    """Save a transformers CHMv2 model as Hugging Face publishes it (``folder/hf``) and as Meta does
    (``folder/meta``: head file and SAT backbone file under their published names).

    transformers applies its stored key bias, so Meta's copy keeps it with a mask of ones.
    """
    hf_model.save_pretrained(folder / "hf")
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    config = hf_model.config.backbone_config
    meta = dinov3_hf_to_meta_keys(backbone, config.hidden_size // config.num_attention_heads, config.rope_theta)
    for key in [k for k in meta if k.endswith("qkv.bias")]:
        layer = key.split(".")[1]
        meta[key] = torch.cat([backbone[f"model.layer.{layer}.attention.{p}_proj.bias"] for p in "qkv"])
        meta[key.replace(".bias", ".bias_mask")] = torch.ones_like(meta[key])
    (folder / "meta").mkdir()
    torch.save(meta, folder / "meta" / CHMV2_META_BACKBONE)
    torch.save(chmv2_hf_head_to_meta_keys({k: v for k, v in state.items() if k.startswith("head.")}), folder / "meta" / CHMV2_META_HEAD)
    return {"hf": folder / "hf", "meta": folder / "meta"}


def dinov3_hf_config(spec, **extra):
    """A transformers ``DINOv3ViTConfig`` with the architecture of a canopy ``ModelSpec``.

    LayerNorm eps is the spec's (Meta's 1e-5): the reference is Meta's code, where the Hub config says 1e-6.
    """
    import transformers

    b = spec.backbone
    return transformers.DINOv3ViTConfig(
        hidden_size=b.embed_dim,
        intermediate_size=int(b.embed_dim * b.mlp_ratio),
        num_hidden_layers=b.depth,
        num_attention_heads=b.num_heads,
        patch_size=b.patch_size,
        image_size=b.img_size,
        num_register_tokens=b.num_register_tokens,
        layer_norm_eps=b.norm_eps,
        rope_theta=b.rope_base,
        layerscale_value=1.0,
        **extra,
    )


def chmv2_hf_model(spec, seed: int = 1) -> torch.nn.Module:
    """A transformers ``CHMv2ForDepthEstimation`` with the architecture of a canopy CHMv2 ``ModelSpec``, randomly filled."""
    import transformers

    backbone = dinov3_hf_config(
        spec,
        key_bias=True,
        out_indices=[i + 1 for i in spec.head.layers],
        reshape_hidden_states=True,
        apply_layernorm=True,
        return_class_token=True,
    )
    config = transformers.CHMv2Config(
        backbone_config=backbone,
        post_process_channels=list(spec.head.out_channels),
        fusion_hidden_size=spec.head.features,
        head_hidden_size=spec.head.hidden_channels,
    )
    return randomize_(transformers.CHMv2ForDepthEstimation(config), seed=seed).eval()
