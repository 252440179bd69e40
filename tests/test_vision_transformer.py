"""The backbone's DINOv2 API, patch-size checks and position-embedding interpolation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from canopy.errors import PatchSizeError, RandomWeightsWarning
from canopy.models import get_model_spec, load_backbone
from canopy.models.vision_transformer import DinoVisionTransformer


@pytest.fixture(scope="module")
def vits():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        return load_backbone("dinov2_vits14", "random")


def test_non_square_input_gives_the_right_token_grid(vits):
    x = torch.rand(2, 3, 154, 98)
    with torch.no_grad():
        out = vits.forward_features(x)
    assert out["x_norm_patchtokens"].shape == (2, 11 * 7, 384)
    assert out["x_norm_clstoken"].shape == (2, 384)
    assert out["x_prenorm"].shape == (2, 1 + 77, 384)
    assert out["x_norm_regtokens"].shape == (2, 0, 384)
    assert torch.isfinite(out["x_norm_patchtokens"]).all()


def test_input_not_a_multiple_of_the_patch_is_refused(vits):
    with pytest.raises(PatchSizeError, match=r"150x98 px is not a multiple of the patch size 14; pad it to 154x98"):
        vits.forward_features(torch.rand(1, 3, 150, 98))


def test_get_intermediate_layers_matches_forward_features(vits):
    x = torch.rand(1, 3, 56, 84)
    with torch.no_grad():
        last = vits.get_intermediate_layers(x, n=1)[0]
        full = vits.forward_features(x)["x_norm_patchtokens"]
        maps = vits.get_intermediate_layers(x, n=[2, 5, 8, 11], reshape=True, return_class_token=True)
        raw = vits.get_intermediate_layers(x, n=2, norm=False)
    torch.testing.assert_close(last, full)
    assert len(maps) == 4
    patches, cls = maps[-1]
    assert patches.shape == (1, 384, 4, 6) and cls.shape == (1, 384)
    # reshape keeps row-major token order: token (r, c) is map[:, :, r, c]
    torch.testing.assert_close(patches[0, :, 1, 2], full[0, 1 * 6 + 2])
    assert len(raw) == 2 and not torch.allclose(raw[1], last)


def test_registers_sit_between_class_and_patch_tokens():
    spec = get_model_spec("dinov2_vits14_reg")
    model = DinoVisionTransformer(dataclasses.replace(spec.backbone, depth=1))
    model.init_random(3)
    with torch.no_grad():
        tokens = model.prepare_tokens(torch.rand(1, 3, 28, 28))
    assert tokens.shape == (1, 1 + 4 + 4, 384)
    torch.testing.assert_close(tokens[0, 1:5], model.register_tokens[0])


def test_trained_grid_is_used_unchanged_and_others_are_interpolated(vits):
    assert vits.interpolate_pos_encoding(518, 518) is vits.pos_embed
    pos = vits.interpolate_pos_encoding(154, 98)
    assert pos.shape == (1, 1 + 77, 384)
    torch.testing.assert_close(pos[:, 0], vits.pos_embed[:, 0])


def test_plain_models_interpolate_with_the_original_offset(vits):
    """Meta's plain models scale by (n + 0.1) / 37 without antialiasing; a size-based resize differs."""
    grid = vits.pos_embed[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(11.1 / 37, 7.1 / 37), mode="bicubic")
    got = vits.interpolate_pos_encoding(154, 98)[:, 1:].reshape(1, 11, 7, 384).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)
    by_size = F.interpolate(grid, size=(11, 7), mode="bicubic")
    assert not torch.allclose(got, by_size)


def test_register_models_interpolate_by_size_with_antialiasing():
    spec = get_model_spec("dinov2_vits14_reg")
    model = DinoVisionTransformer(dataclasses.replace(spec.backbone, depth=1))
    model.init_random(0)
    grid = model.pos_embed[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(11, 7), mode="bicubic", antialias=True)
    got = model.interpolate_pos_encoding(154, 98)[:, 1:].reshape(1, 11, 7, 384).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)


def test_random_init_is_seeded():
    spec = get_model_spec("dinov2_vits14")
    a, b, c = (DinoVisionTransformer(dataclasses.replace(spec.backbone, depth=1)) for _ in range(3))
    a.init_random(1), b.init_random(1), c.init_random(2)
    assert torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
