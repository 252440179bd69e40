"""canopy's Meta canopy-height models against an independent re-implementation of the published forward pass.

The int8 ("compressed") files must give exactly the published code's heights on the CPU, for each chip
as if it ran alone: each quantised Linear re-quantises its input with a scale taken over the whole
tensor, so batch mates, or any difference in the order of floating-point operations before it (fused
attention, for one), grow into whole quantisation steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from canopy.models import get_model_spec
from canopy.models.height_model import ModelRef, is_quantized, load_height_model
from canopy.runtime.inference import ChipPredictor
from meta_reference import SSLAE, float_from_int8, heights

LARGE = "meta-chm-v1-large"


def _reduced(attention: str | None = None):
    """meta-chm-v1-large at its published widths, cut to 4 blocks that all feed the head."""
    spec = get_model_spec(LARGE)
    backbone = dataclasses.replace(spec.backbone, depth=4, **({"attention": attention} if attention else {}))
    return dataclasses.replace(spec, backbone=backbone, head=dataclasses.replace(spec.head, layers=(0, 1, 2, 3)))


def _reference(spec, seed=0) -> SSLAE:
    """The published architecture with random values of realistic scale."""
    torch.manual_seed(seed)
    model = SSLAE(spec.backbone.embed_dim, spec.backbone.depth, spec.backbone.num_heads, spec.head.layers,
                  spec.head.out_channels, spec.head.features).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.02 * noise)
        model.decode_head.conv_depth.head[4].weight.mul_(30.0)  # bin logits that vary, so heights do
    return model


@pytest.fixture(scope="module")
def chips():
    return torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


def _load(spec, path, monkeypatch):
    return load_height_model(ModelRef(spec, str(path)), device=torch.device("cpu")).model


def test_float_checkpoint_matches_the_published_forward_pass(tmp_path, monkeypatch, chips):
    spec = _reduced()
    reference = _reference(spec)
    path = tmp_path / "SSLlarge.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = _load(spec, path, monkeypatch)
    with torch.inference_mode():
        expected = heights(reference, chips, spec.normalization.mean, spec.normalization.std)
        got = model(chips)
    assert expected.std() > 0.1  # heights that vary, so the comparison means something
    assert (got - expected).abs().max().item() <= 1e-5


def _compressed(spec, path):
    """A compressed file made as Meta made theirs: dynamic int8 quantisation asked for Linear and conv layers."""
    reference = torch.ao.quantization.quantize_dynamic(
        _reference(spec), {torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d}, dtype=torch.qint8
    )
    torch.save(reference.state_dict(), path)
    return reference


def test_int8_heights_are_the_published_code_run_chip_by_chip_whatever_the_batch(tmp_path, monkeypatch, chips):
    spec = _reduced()
    path = tmp_path / "compressed_SSLlarge.pth"
    reference = _compressed(spec, path)
    model = _load(spec, path, monkeypatch)
    assert isinstance(model.backbone.blocks[0].attn.qkv, torch.ao.nn.quantized.dynamic.Linear)
    batch = torch.cat([chips, 0.4 * chips[:1]])  # a dim chip, whose own activation scale is far from its batch mates'
    predictor = ChipPredictor(model, torch.device("cpu"))
    got = predictor(batch.numpy())
    with torch.inference_mode():
        alone = [heights(reference, batch[i : i + 1], spec.normalization.mean, spec.normalization.std)[0, 0].numpy()
                 for i in range(len(batch))]
        together = model(batch)[:, 0].numpy()  # the whole batch through the quantised layers at once
    for i, expected in enumerate(alone):
        assert np.array_equal(got[i], expected), f"chip {i} differs from Meta's code run on it alone"
    assert np.array_equal(got, np.concatenate([predictor(batch[i : i + 1].numpy()) for i in range(len(batch))]))
    assert np.abs(together - got).max() > 1e-3  # what one scale for the batch would have done: heights by batch mates


def test_fused_attention_would_break_int8_exactness(tmp_path, monkeypatch, chips):
    """Why the registry asks for Meta's explicit attention: with the fused kernel the int8 model drifts."""
    for name in ("meta-chm-v1-huge", "meta-chm-v1-huge-compressed", "meta-chm-v1-huge-aerial", LARGE):
        assert get_model_spec(name).backbone.attention == "explicit", name
    assert get_model_spec("dinov2_vits14").backbone.attention == "sdpa"  # keeps parity with transformers
    spec = _reduced(attention="sdpa")
    path = tmp_path / "compressed_SSLlarge.pth"
    reference = _compressed(spec, path)
    model = _load(spec, path, monkeypatch)
    with torch.inference_mode():
        expected = heights(reference, chips, spec.normalization.mean, spec.normalization.std)
        got = model(chips)
    assert (got - expected).abs().max().item() > 1e-4


def test_convert_writes_the_dequantised_weights_as_float_safetensors(tmp_path, monkeypatch, chips):
    from click.testing import CliRunner

    from canopy.cli.main import cli
    from canopy.errors import CheckpointFormatError
    from canopy.models.convert import convert_to_float

    spec = _reduced()
    source = tmp_path / "compressed_SSLlarge.pth"
    reference = _compressed(spec, source)
    target = tmp_path / "SSLlarge_float.safetensors"
    result = CliRunner().invoke(cli, ["models", "convert", str(source), str(target)])
    assert result.exit_code == 0, result.output
    assert "int8 layers dequantised" in result.output and target.is_file()
    converted = load_height_model(ModelRef(spec, str(target)), device=torch.device("cpu"))
    dequantised = load_height_model(ModelRef(spec, str(source)), device=torch.device("meta"))  # what a GPU gets from the int8 file
    assert not is_quantized(converted.model) and "float conversion of int8 file" in converted.backbone_weights
    qkv = reference.backbone.blocks[1].attn.qkv
    assert torch.equal(converted.model.backbone.blocks[1].attn.qkv.weight, qkv.weight().dequantize())
    assert converted.model.state_dict().keys() == dequantised.model.state_dict().keys()
    with torch.inference_mode():
        got = converted.model(chips)
        expected = heights(float_from_int8(reference, _reference(spec)), chips, spec.normalization.mean, spec.normalization.std)
        int8 = heights(reference, chips, spec.normalization.mean, spec.normalization.std)
    assert expected.std() > 0.1 and (got - expected).abs().max().item() <= 1e-5
    # float activations instead of int8 ones: 0.032 m at most here, on heights spanning 1.8 m
    assert 0 < (got - int8).abs().max().item() < 0.1
    with pytest.raises(CheckpointFormatError, match="nothing to convert"):
        convert_to_float(_float_file(spec, tmp_path), tmp_path / "x.safetensors")


def _float_file(spec, tmp_path):
    path = tmp_path / "SSLlarge.pth"
    torch.save({"state_dict": _reference(spec).state_dict()}, path)
    return path


def test_an_int8_file_off_the_cpu_runs_its_dequantised_weights(tmp_path, chips):
    """A GPU has no int8 dynamic kernels: the layers become float layers holding the int8 weights' values."""
    spec = _reduced()
    path = tmp_path / "compressed_SSLlarge.pth"
    reference = _compressed(spec, path)
    elsewhere = load_height_model(ModelRef(spec, str(path)), device=torch.device("meta"))
    assert not is_quantized(elsewhere.model) and isinstance(elsewhere.model.backbone.blocks[0].attn.qkv, torch.nn.Linear)
    assert torch.equal(elsewhere.model.backbone.blocks[0].attn.qkv.weight, reference.backbone.blocks[0].attn.qkv.weight().dequantize())
    with torch.inference_mode():
        got = elsewhere.model(chips)
        expected = heights(float_from_int8(reference, _reference(spec)), chips, spec.normalization.mean, spec.normalization.std)
    assert expected.std() > 0.1 and (got - expected).abs().max().item() <= 1e-5
