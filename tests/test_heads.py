"""Height heads: output at input resolution, non-negative, trainable; the full HeightModel."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from canopy.models import HeightModel, get_model_spec
from canopy.models.heads import DPTHead, HeightBins, LinearHead, build_head
from canopy.models.vision_transformer import DinoVisionTransformer


def _features(batch=2, dim=64, rows=5, cols=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, dim, rows, cols, generator=g), torch.randn(batch, dim, generator=g)) for _ in range(4)]


@pytest.mark.parametrize("readout", ["project", "add", "ignore"])
def test_dpt_head_returns_non_negative_height_at_input_size(readout):
    head = DPTHead(64, features=32, readout=readout)
    out = head(_features(), (70, 42))
    assert out.shape == (2, 1, 70, 42)
    assert (out >= 0).all() and torch.isfinite(out).all()


def test_dpt_head_uses_every_layer_and_the_class_token():
    head = DPTHead(64, features=32)
    feats = _features()
    base = head(feats, (70, 42))
    for i in range(4):
        changed = list(feats)
        changed[i] = (feats[i][0] + 1.0, feats[i][1])
        assert not torch.allclose(head(changed, (70, 42)), base), f"layer {i} ignored"
    changed = [(p, c + 1.0) for p, c in feats]
    assert not torch.allclose(head(changed, (70, 42)), base)


def test_dpt_head_learns():
    torch.manual_seed(0)
    head = DPTHead(64, features=16)
    feats = _features(batch=1)
    target = torch.full((1, 1, 28, 28), 12.0)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)  # 1e-2 oscillates in the published body, which has no norm layers
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.l1_loss(head(feats, (28, 28)), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_linear_head_shape_and_build_head_choice():
    spec = get_model_spec("dinov2_vits14")
    assert isinstance(build_head(spec.head, 384), DPTHead)
    linear = build_head(dataclasses.replace(spec.head, type="linear"), 64)
    assert isinstance(linear, LinearHead)
    out = linear.eval()(_features(), (70, 42))
    assert out.shape == (2, 1, 70, 42) and (out >= 0).all()


def test_height_model_normalises_with_the_model_statistics():
    spec = get_model_spec("dinov2_vits14")
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=4), head=dataclasses.replace(spec.head, layers=(0, 1, 2, 3)))
    backbone = DinoVisionTransformer(spec.backbone)
    backbone.init_random(0)
    model = HeightModel(spec, backbone).eval()
    x = torch.rand(1, 3, 56, 42)
    with torch.no_grad():
        out = model(x)
        normalised = (x - torch.tensor(spec.normalization.mean).view(1, 3, 1, 1)) / torch.tensor(spec.normalization.std).view(1, 3, 1, 1)
        direct = backbone.get_intermediate_layers(normalised, n=[0, 1, 2, 3], reshape=True, return_class_token=True)
        expected = model.head(list(direct), (56, 42))
    assert out.shape == (1, 1, 56, 42)
    torch.testing.assert_close(out, expected)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_regression_and_binned_heads_are_one_body_with_two_outputs():
    regression = DPTHead(64, features=32).state_dict()
    binned = DPTHead(64, features=32, bins=HeightBins()).state_dict()
    assert list(regression) == list(binned)
    different = [k for k in regression if regression[k].shape != binned[k].shape]
    assert different == ["conv_depth.head.4.weight", "conv_depth.head.4.bias"]
    assert binned["conv_depth.head.4.weight"].shape[0] == 256 and regression["conv_depth.head.4.weight"].shape[0] == 1
