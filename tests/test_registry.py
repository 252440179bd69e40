"""The model registry: the eight DINOv2 backbones and validation of model records."""

from __future__ import annotations

import pytest

from canopy.errors import ModelConfigError, UnknownModelError
from canopy.models.registry import get_model_spec, list_models, parse_model

EXPECTED = {
    "dinov2_vits14": (384, 12, 6, [2, 5, 8, 11], "mlp"),
    "dinov2_vitb14": (768, 12, 12, [2, 5, 8, 11], "mlp"),
    "dinov2_vitl14": (1024, 24, 16, [4, 11, 17, 23], "mlp"),
    "dinov2_vitg14": (1536, 40, 24, [9, 19, 29, 39], "swiglu"),
}


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_all_eight_dinov2_backbones_are_registered(name, registers):
    spec = get_model_spec(name + ("_reg" if registers else ""))
    dim, depth, heads, layers, ffn = EXPECTED[name]
    b = spec.backbone
    assert (b.embed_dim, b.depth, b.num_heads, b.ffn) == (dim, depth, heads, ffn)
    assert list(spec.head.layers) == layers
    assert b.patch_size == 14 and b.img_size == 518
    assert b.num_register_tokens == (4 if registers else 0)
    # The original interpolates plain models with a 0.1 offset, register models with antialiasing.
    assert (b.interpolate_offset, b.interpolate_antialias) == ((0.0, True) if registers else (0.1, False))
    assert spec.normalization.mean == (0.485, 0.456, 0.406)
    assert spec.weights[0].url.startswith("https://dl.fbaipublicfiles.com/dinov2/")
    assert spec.weights[0].filename.endswith("_pretrain.pth")


def test_list_models_is_sorted_and_complete():
    names = [s.name for s in list_models()]
    assert names == sorted(names)
    assert len([n for n in names if n.startswith("dinov2_")]) == 8


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match=r"Unknown model 'dinov3'.*dinov2_vits14"):
        get_model_spec("dinov3")


def _record(**changes):
    record = {
        "name": "m",
        "description": "d",
        "licence": "x",
        "backbone": {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 14},
        "head": {"type": "dpt", "layers": [0, 0, 1, 1]},
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "ground_resolution": 0.5,
    }
    record.update(changes)
    return record


def test_parse_model_accepts_a_minimal_record():
    spec = parse_model(_record())
    assert spec.backbone.grid_size == 37 and spec.weights == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backbone": {"embed_dim": 64, "depth": 2, "num_heads": 5, "patch_size": 14}}, "not divisible"),
        ({"head": {"type": "dpt", "layers": [0, 1, 2, 3]}}, "outside the backbone"),
        ({"head": {"type": "dpt", "layers": [0, 1]}}, "exactly 4 layers"),
        ({"head": {"type": "unet", "layers": [0]}}, "head type"),
        ({"ground_resolution": 0}, "ground_resolution"),
        ({"colour": "green"}, "unknown keys"),
        ({"normalization": {"mean": [0.5], "std": [0.2]}}, "three means"),
    ],
)
def test_parse_model_refuses_bad_records(changes, message):
    with pytest.raises(ModelConfigError, match=message):
        parse_model(_record(**changes))


def test_parse_model_names_a_missing_key():
    record = _record()
    del record["head"]
    with pytest.raises(ModelConfigError, match="missing key 'head'"):
        parse_model(record)
