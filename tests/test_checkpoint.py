"""Reading checkpoints safely and refusing ones that do not fit."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from safetensors.torch import save_file

from canopy.errors import CheckpointFormatError, UnsafeCheckpointError, WeightsMismatchError
from canopy.models import get_model_spec, load_backbone
from canopy.models.backbone import build_backbone
from canopy.models.checkpoint import detect_layout, read_state_dict, to_meta_layout
from canopy.models.vision_transformer import DinoVisionTransformer
from canopy.models.weights import ResolvedWeights


def _small(name: str, depth: int = 2) -> DinoVisionTransformer:
    spec = get_model_spec(name)
    model = DinoVisionTransformer(dataclasses.replace(spec.backbone, depth=depth))
    model.init_random(5)
    return model


class _WritesMarker:
    """Unpickling this object writes a file: the attack a weights_only load must stop."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1), "payload": _WritesMarker(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="refuses to unpickle"):
        read_state_dict(path)
    assert not marker.exists()
    legacy = tmp_path / "evil_legacy.pth"
    with legacy.open("wb") as handle:
        pickle.dump(_WritesMarker(marker), handle, protocol=2)
    with pytest.raises((UnsafeCheckpointError, CheckpointFormatError)):
        read_state_dict(legacy)
    assert not marker.exists()


def test_non_checkpoints_and_truncated_files_are_refused(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointFormatError, match="neither safetensors nor a PyTorch checkpoint"):
        read_state_dict(text)
    good = tmp_path / "good.pth"
    torch.save(_small("dinov2_vits14").state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_state_dict(truncated)


def test_training_wrappers_and_prefixes_are_unwrapped(tmp_path):
    state = _small("dinov2_vits14").state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    converted = to_meta_layout(read_state_dict(path))
    assert set(converted) == set(state)


def test_layout_detection():
    meta = _small("dinov2_vits14", depth=1).state_dict()
    assert detect_layout(meta) == "meta"
    assert detect_layout({"embeddings.cls_token": torch.zeros(1), "encoder.layer.0.attention.attention.query.weight": torch.zeros(1)}) == "hf"
    assert detect_layout({"encoder.layer.0.attention.q_proj.weight": torch.zeros(1)}) == "hf-proj"
    with pytest.raises(CheckpointFormatError, match="match no DINOv2 layout"):
        detect_layout({"fc.weight": torch.zeros(1)})


def test_wrong_variant_names_expected_and_suggested(tmp_path):
    path = tmp_path / "vitb.safetensors"
    vitb = get_model_spec("dinov2_vitb14")
    model = DinoVisionTransformer(dataclasses.replace(vitb.backbone, depth=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(WeightsMismatchError) as info:
        load_backbone("dinov2_vits14_reg", path)
    message = str(info.value)
    assert "do not fit dinov2_vits14_reg (embed 384, 12 blocks, patch 14, 4 registers)" in message
    assert "looks like ViT-B/14 (2 blocks)" in message
    assert "missing: blocks.2." in message or "missing: register_tokens" in message
    assert "wrong shape: cls_token (1, 1, 768) != (1, 1, 384)" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    spec = get_model_spec("dinov2_vits14")
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=2), head=dataclasses.replace(spec.head, layers=(0, 0, 1, 1)))
    state = DinoVisionTransformer(spec.backbone).state_dict()
    del state["norm.weight"]
    state["blocks.0.extra"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match=r"missing: norm\.weight; unexpected: blocks\.0\.extra"):
        build_backbone(spec, ResolvedWeights(path=path, identity="x"))


def test_training_framework_containers_are_read_as_plain_dicts(tmp_path, monkeypatch):
    """A Lightning checkpoint pickles an AttributeDict of hyper-parameters beside the weights."""
    import sys
    import types

    module = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = module.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    module.AttributeDict = AttributeDict
    for name in ("pytorch_lightning", "pytorch_lightning.utilities"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    state = _small("dinov2_vits14", depth=1).state_dict()
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": AttributeDict(lr=0.1)}, path)
    monkeypatch.delitem(sys.modules, module.__name__)  # the reader must not need Lightning installed
    assert set(read_state_dict(path)) == set(state)


def test_a_checkpoint_is_loaded_into_a_backbone_that_was_never_randomly_initialised(tmp_path, monkeypatch):
    """Random initialisation of a ViT-L takes seconds, its checkpoint a tenth of that: loading skips it."""
    spec = get_model_spec("dinov2_vits14")
    source = DinoVisionTransformer(spec.backbone)
    source.init_random(3)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(source.state_dict(), path)
    initialised = []
    real = torch.nn.init.kaiming_uniform_

    def recording(tensor, *args, **kwargs):
        initialised.append(tensor.device.type)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", recording)
    loaded = build_backbone(spec, ResolvedWeights(path=path, identity="x"))
    assert initialised and set(initialised) == {"meta"}  # nn.Linear asked, on the meta device only
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert all(p.device.type == "cpu" for p in loaded.parameters())
