"""Meta's canopy-height v1 models: published key layout, binned head arithmetic, whole-checkpoint loading."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from canopy.errors import ResolutionWarning, WeightsMismatchError
from canopy.models import get_model_spec
from canopy.models.heads import build_head
from canopy.models.heads.dpt import HeightBins, bins_to_height
from canopy.models.height_model import ModelRef, load_height_model
from canopy.models.vision_transformer import DinoVisionTransformer
from canopy.prediction import predict
from rasters import NEON

HUGE = "meta-chm-v1-huge"


def test_the_registry_entry_matches_the_published_architecture():
    spec = get_model_spec(HUGE)
    b = spec.backbone
    assert (b.embed_dim, b.depth, b.num_heads, b.patch_size, b.img_size) == (1280, 32, 20, 16, 224)
    assert list(spec.head.layers) == [9, 16, 22, 29] and spec.head.norm_layers is False
    assert spec.normalization.mean == (0.420, 0.411, 0.296) and spec.normalization.std == (0.213, 0.156, 0.143)
    assert spec.chip_size == 256 and spec.head_in_checkpoint
    assert spec.weights[0].url.endswith("/forests/v1/models/saved_checkpoints/SSLhuge_satellite.pth")


def test_module_names_and_shapes_are_the_published_checkpoint_keys():
    spec = get_model_spec(HUGE)
    with torch.device("meta"):  # shapes only: the real model is 2.7 GB
        backbone = DinoVisionTransformer(spec.backbone)
        head = build_head(spec.head, spec.backbone.embed_dim)
    b, h = backbone.state_dict(), head.state_dict()
    assert b["pos_embed"].shape == (1, 1 + 14 * 14, 1280)
    assert b["blocks.31.attn.qkv.weight"].shape == (3840, 1280) and "blocks.31.ls2.gamma" in b
    expected_head = {
        "reassemble_blocks.projects.0.conv.weight": (160, 1280, 1, 1),
        "reassemble_blocks.resize_layers.0.weight": (160, 160, 4, 4),
        "reassemble_blocks.resize_layers.3.weight": (1280, 1280, 3, 3),
        "reassemble_blocks.readout_projects.2.0.weight": (1280, 2560),
        "convs.3.conv.weight": (256, 1280, 3, 3),
        "fusion_blocks.1.res_conv_unit1.conv1.conv.weight": (256, 256, 3, 3),
        "fusion_blocks.3.project.conv.bias": (256,),
        "project.conv.weight": (256, 256, 3, 3),
        "conv_depth.head.0.weight": (128, 256, 3, 3),
        "conv_depth.head.2.weight": (32, 128, 3, 3),
        "conv_depth.head.4.weight": (256, 32, 1, 1),
    }
    for key, shape in expected_head.items():
        assert tuple(h[key].shape) == shape, key
    assert not any(k.startswith("fusion_blocks.0.res_conv_unit1") for k in h)
    assert "convs.0.conv.bias" not in h and "reassemble_blocks.resize_layers.2.weight" not in h


def test_binned_head_arithmetic_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.0, 0.5]).view(1, 4, 1, 1)
    centres = [0.001, 0.001 + 9.999 / 3, 0.001 + 2 * 9.999 / 3, 10.0]
    weights = [2.1, 0.1, 0.1, 0.6]
    expected = 10 * sum(w * c for w, c in zip(weights, centres)) / sum(weights)
    assert bins_to_height(logits, HeightBins(4, 0.001, 10.0, 10.0)).item() == pytest.approx(expected, rel=1e-6)


def test_position_embeddings_interpolate_by_size_with_aligned_corners():
    spec = get_model_spec(HUGE)
    small = dataclasses.replace(spec.backbone, embed_dim=32, depth=1, num_heads=4)
    model = DinoVisionTransformer(small)
    model.init_random(0)
    grid = model.pos_embed[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 12), mode="bicubic", align_corners=True)
    got = model.interpolate_pos_encoding(256, 192)[:, 1:].reshape(1, 16, 12, 32).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)


def _small_spec():
    spec = get_model_spec(HUGE)
    return dataclasses.replace(
        spec,
        backbone=dataclasses.replace(spec.backbone, embed_dim=64, depth=4, num_heads=4),
        head=dataclasses.replace(spec.head, layers=(0, 1, 2, 3), out_channels=(8, 16, 32, 64), features=32),
    )


def _published_checkpoint(spec, path, seed=0):
    """A training-framework checkpoint with Meta's key layout (reduced in size), random values."""
    torch.manual_seed(seed)
    backbone = DinoVisionTransformer(spec.backbone)
    backbone.init_random(seed)
    head = build_head(spec.head, spec.backbone.embed_dim)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    torch.save({"epoch": 7, "global_step": 1234, "state_dict": state}, path)
    return backbone, head


def test_whole_checkpoint_loads_and_predicts_on_neon(tmp_path, monkeypatch):
    spec = _small_spec()
    path = tmp_path / "SSLsmall.pth"
    backbone, head = _published_checkpoint(spec, path)
    loaded = load_height_model(ModelRef(spec, str(path)))
    for key, value in head.state_dict().items():
        assert torch.equal(loaded.model.head.state_dict()[key], value)
    assert torch.equal(loaded.model.backbone.blocks[2].mlp.fc1.weight, backbone.blocks[2].mlp.fc1.weight)
    assert loaded.head_weights == loaded.backbone_weights and len(loaded.backbone_weights) == 64
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        out = loaded.model(x)
        layers = backbone.get_intermediate_layers((x - loaded.model.mean) / loaded.model.std, n=[0, 1, 2, 3],
                                                  reshape=True, return_class_token=True, norm=False)
        torch.testing.assert_close(out, head(list(layers), (256, 256)))

    out_path = tmp_path / "meta.tif"
    with pytest.warns(ResolutionWarning, match="at 0.1 m, finer than the 0.25-1.2 m"):
        result = predict(NEON / "TEAK_043_rgb.tif", model=ModelRef(spec), weights=path, out=out_path)
    inner = result.values[1:-1, 1:-1]  # 0.6 m pixels straddling the 40 m plot's edge may be nodata
    assert np.isfinite(inner).all() and (inner >= 0).all()
    with rasterio.open(out_path) as dst:
        assert dst.res == (0.6, 0.6) and dst.tags()["canopy_chip_size"] == "256"


def test_checkpoints_of_the_wrong_size_or_without_a_head_are_refused(tmp_path, monkeypatch):
    spec = _small_spec()
    wrong = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, embed_dim=32))
    path = tmp_path / "wrong.pth"
    _published_checkpoint(dataclasses.replace(wrong, head=dataclasses.replace(wrong.head, out_channels=(4, 8, 16, 32))), path)
    with pytest.raises(WeightsMismatchError, match="do not fit meta-chm-v1-huge"):
        load_height_model(ModelRef(spec, str(path)))
    backbone_only = tmp_path / "backbone_only.pth"
    torch.save({f"backbone.{k}": v for k, v in DinoVisionTransformer(spec.backbone).state_dict().items()}, backbone_only)
    with pytest.raises(WeightsMismatchError, match="hold no decode_head"):
        load_height_model(ModelRef(spec, str(backbone_only)))


class _PublishedLayout(torch.nn.Module):
    """The attribute names of Meta's SSLAE (backbone, decode_head), to produce checkpoints in their layout."""

    def __init__(self, spec):
        super().__init__()
        self.backbone = DinoVisionTransformer(spec.backbone)
        self.backbone.init_random(3)
        torch.manual_seed(3)
        self.decode_head = build_head(spec.head, spec.backbone.embed_dim)


def test_default_model_is_meta_huge_once_cached_and_says_how_to_get_it_otherwise(tmp_path):
    from click.testing import CliRunner

    from canopy.cli.main import cli
    from canopy.models.weights import cached_path
    from canopy.models.defaults import default_model

    result = CliRunner().invoke(cli, ["predict", "--imagery", str(NEON / "TEAK_043_rgb.tif"), "--out", str(tmp_path / "m.tif")])
    assert result.exit_code == 1
    assert "No --model given, and no default model is in the weights cache: download https://" in result.output
    assert "put CHMv2's gated files in" in result.output
    assert "or pass --model NAME" in result.output and not (tmp_path / "m.tif").exists()
    compressed = get_model_spec("meta-chm-v1-huge-compressed")
    target = cached_path(compressed, compressed.weights[0])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"placeholder")
    assert default_model() == "meta-chm-v1-huge-compressed"
    huge = get_model_spec(HUGE)
    cached_path(huge, huge.weights[0]).parent.mkdir(parents=True)
    cached_path(huge, huge.weights[0]).write_bytes(b"placeholder")
    assert default_model() == HUGE


def test_a_compressed_checkpoint_runs_through_predict_and_a_wrong_one_is_refused(tmp_path, monkeypatch):

    spec = dataclasses.replace(_small_spec(), name="meta-chm-v1-huge-compressed")
    compressed = torch.ao.quantization.quantize_dynamic(_PublishedLayout(spec).eval(), {torch.nn.Linear}, dtype=torch.qint8)
    path = tmp_path / "compressed.pth"
    torch.save(compressed.state_dict(), path)
    with pytest.warns(ResolutionWarning):
        result = predict(NEON / "TEAK_044_rgb.tif", model=ModelRef(spec), weights=path, device="cpu", out=tmp_path / "c.tif")
    assert np.isfinite(result.values[1:-1, 1:-1]).all()
    bigger = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=5))
    with pytest.raises(WeightsMismatchError, match=r"Quantised weights from .* do not fit .* missing \['backbone.blocks.4"):
        load_height_model(ModelRef(bigger, str(path)), device=torch.device("cpu"))
