"""Our DINOv2 against transformers' Dinov2Model on identical random weights, in every published layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers
from safetensors.torch import save_file

from canopy.models import get_model_spec
from canopy.models.backbone import build_backbone
from canopy.models.registry import ModelSpec
from canopy.models.weights import resolve_weights
from checkpoints import hf_to_meta_keys, randomize_


def _hf_model(spec: ModelSpec):
    """A transformers DINOv2 with the same architecture as ``spec``, randomly filled."""
    b = spec.backbone
    common = dict(
        hidden_size=b.embed_dim,
        num_hidden_layers=b.depth,
        num_attention_heads=b.num_heads,
        image_size=b.img_size,
        patch_size=b.patch_size,
        mlp_ratio=int(b.mlp_ratio),
        use_swiglu_ffn=b.ffn == "swiglu",
        layerscale_value=1.0,
    )
    if b.num_register_tokens:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=b.num_register_tokens, **common)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    return randomize_(model, seed=1).eval()


def _load(spec: ModelSpec, path):
    return build_backbone(spec, resolve_weights(spec, path))


def _reference(hf_model, x, registers: int):
    with torch.no_grad():
        hidden = hf_model(pixel_values=x).last_hidden_state
    return hidden[:, 0], hidden[:, 1 + registers :]


CASES = [
    ("dinov2_vits14", None),
    ("dinov2_vits14_reg", None),
    ("dinov2_vitg14", 2),  # SwiGLU feed-forward; two blocks keep the test small
]


@pytest.mark.parametrize(("name", "depth"), CASES)
def test_parity_with_transformers_in_all_layouts(name, depth, tmp_path):
    spec = get_model_spec(name)
    if depth is not None:
        spec = dataclasses.replace(
            spec,
            backbone=dataclasses.replace(spec.backbone, depth=depth),
            head=dataclasses.replace(spec.head, layers=(0, 0, 1, 1)),
        )
    hf_model = _hf_model(spec)
    registers = spec.backbone.num_register_tokens
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(2))
    ref_cls, ref_patches = _reference(hf_model, x, registers)

    published = tmp_path / "published"
    hf_model.save_pretrained(published)
    proj_layout = tmp_path / "proj.safetensors"
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    assert any(".q_proj." in k for k in state) or any(".query." in k for k in state)
    save_file(state, str(proj_layout))
    meta_layout = tmp_path / "meta.pth"
    torch.save(hf_to_meta_keys(state), meta_layout)

    outputs = {}
    for label, path in [
        ("published", published / "model.safetensors"),
        ("proj", proj_layout),
        ("meta", meta_layout),
    ]:
        with torch.no_grad():
            features = _load(spec, path).forward_features(x)
        assert (features["x_norm_clstoken"] - ref_cls).abs().max().item() < 1e-4, label
        assert (features["x_norm_patchtokens"] - ref_patches).abs().max().item() < 1e-4, label
        assert features["x_norm_regtokens"].shape == (1, registers, spec.backbone.embed_dim)
        outputs[label] = features["x_norm_patchtokens"]
    assert torch.equal(outputs["published"], outputs["meta"])
    assert torch.equal(outputs["proj"], outputs["meta"])


def test_published_layout_really_uses_query_key_value_names(tmp_path):
    spec = get_model_spec("dinov2_vits14")
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=1), head=dataclasses.replace(spec.head, layers=(0, 0, 0, 0)))
    _hf_model(spec).save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "encoder.layer.0.attention.attention.query.weight" in keys
    assert "encoder.layer.0.layer_scale1.lambda1" in keys
