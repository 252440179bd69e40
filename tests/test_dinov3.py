"""DINOv3 backbones and Meta's CHMv2 against transformers on identical random weights, in both published layouts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import rasterio
import torch
import transformers
from safetensors.torch import save_file

from canopy.errors import DownloadError, OfflineError, ResolutionWarning, WeightsMismatchError, WeightsNotFoundError
from canopy.models import get_model_spec
from canopy.models.backbone import build_backbone
from canopy.models.heads.dpt import HeightBins, bin_centres, bins_to_height
from canopy.models.height_model import ModelRef, load_height_model
from canopy.models.layers.rope import RopePositionEmbedding
from canopy.models.registry import ModelSpec
from canopy.models.weights import cached_path, find_cached, resolve_weights
from canopy.prediction import predict
from checkpoints import CHMV2_META_BACKBONE as SAT_BACKBONE
from checkpoints import CHMV2_META_HEAD as SAT_HEAD
from checkpoints import chmv2_hf_model, dinov3_hf_config, dinov3_hf_to_meta_keys, randomize_, save_chmv2_layouts
from rasters import NEON


def _reduced(spec: ModelSpec, depth: int, layers: tuple[int, ...] | None = None, **backbone) -> ModelSpec:
    """The spec with fewer blocks (and other backbone sizes) so a test runs in seconds."""
    layers = layers or tuple(min(i, depth - 1) for i in spec.head.layers)
    return dataclasses.replace(
        spec,
        backbone=dataclasses.replace(spec.backbone, depth=depth, **backbone),
        head=dataclasses.replace(spec.head, layers=layers),
    )


def _save_layouts(hf_model, spec: ModelSpec, tmp_path) -> dict[str, object]:
    """The same weights as transformers saves them, as transformers holds them, and in Meta's layout."""
    published = tmp_path / "published"
    hf_model.save_pretrained(published)
    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    in_memory = tmp_path / "in_memory.safetensors"
    save_file(state, str(in_memory))
    meta = tmp_path / "meta.pth"
    head_dim = spec.backbone.embed_dim // spec.backbone.num_heads
    torch.save(dinov3_hf_to_meta_keys(state, head_dim, spec.backbone.rope_base), meta)
    return {"published": published, "in_memory": in_memory, "meta": meta}


BACKBONES = [
    ("dinov3_vits16", None, (224, 224)),  # full size
    ("dinov3_vitb16", 2, (160, 224)),  # non-square chip
    ("dinov3_vitl16_sat", 2, (256, 192)),  # full width, non-default chip size
]


@pytest.mark.parametrize(("name", "depth", "size"), BACKBONES)
def test_backbone_parity_with_transformers_in_both_layouts(name, depth, size, tmp_path):
    spec = get_model_spec(name)
    if depth is not None:
        spec = _reduced(spec, depth)
    hf_model = randomize_(transformers.DINOv3ViTModel(dinov3_hf_config(spec)), seed=1).eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = hf_model(pixel_values=x).last_hidden_state
    outputs = {}
    for label, path in _save_layouts(hf_model, spec, tmp_path).items():
        with torch.no_grad():
            features = build_backbone(spec, resolve_weights(spec, path)).forward_features(x)
        assert (features["x_norm_clstoken"] - reference[:, 0]).abs().max().item() < 1e-4, label
        assert (features["x_norm_patchtokens"] - reference[:, 5:]).abs().max().item() < 1e-4, label
        assert features["x_norm_regtokens"].shape == (2, 4, spec.backbone.embed_dim)
        outputs[label] = features["x_norm_patchtokens"]
    assert (outputs["published"] - outputs["meta"]).abs().max().item() < 1e-5


def test_the_rope_periods_are_read_from_meta_files_not_recomputed(tmp_path):
    spec = _reduced(get_model_spec("dinov3_vits16"), 1)
    hf_model = randomize_(transformers.DINOv3ViTModel(dinov3_hf_config(spec)), seed=3).eval()
    state = dinov3_hf_to_meta_keys(hf_model.state_dict(), 64)
    state["rope_embed.periods"] = state["rope_embed.periods"] * 1.5
    torch.save(state, tmp_path / "meta.pth")
    backbone = build_backbone(spec, resolve_weights(spec, tmp_path / "meta.pth"))
    torch.testing.assert_close(backbone.rope_embed.periods, state["rope_embed.periods"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (backbone.forward_features(x)["x_norm_patchtokens"] - hf_model(pixel_values=x).last_hidden_state[:, 5:]).abs().max() > 1e-3


def test_rope_by_hand_and_on_non_square_grids():
    rope = RopePositionEmbedding(8, base=100.0)
    assert rope.periods.tolist() == pytest.approx([1.0, 10.0])
    sin, cos = rope(2, 4)
    assert sin.shape == (8, 8)
    # the patch in row 1, column 3: centre (1.5 / 2, 3.5 / 4) scaled to [-1, 1] = (0.5, 0.75)
    angles = [2 * math.pi * c / p for c in (0.5, 0.75) for p in (1.0, 10.0)] * 2
    assert sin[7].tolist() == pytest.approx([math.sin(a) for a in angles], abs=1e-6)
    assert cos[7].tolist() == pytest.approx([math.cos(a) for a in angles], abs=1e-6)


def test_registry_sizes_and_module_names_are_the_published_ones():
    sat = get_model_spec("dinov3_vitl16_sat")
    b = sat.backbone
    assert (b.family, b.embed_dim, b.depth, b.num_heads, b.patch_size, b.num_register_tokens) == ("dinov3", 1024, 24, 16, 16, 4)
    assert (b.norm_eps, b.layerscale_init, b.mask_k_bias) == (1e-5, 1e-5, True)
    assert sat.chip_size % 16 == 0 and list(sat.head.layers) == [5, 11, 17, 23]
    from canopy.models.vision_transformer import build_vision_transformer

    with torch.device("meta"):
        keys = build_vision_transformer(b).state_dict()
    for key, shape in {
        "storage_tokens": (1, 4, 1024),
        "rope_embed.periods": (16,),
        "blocks.23.attn.qkv.bias_mask": (3072,),
        "blocks.0.ls1.gamma": (1024,),
        "mask_token": (1, 1024),
    }.items():
        assert tuple(keys[key].shape) == shape, key
    assert "pos_embed" not in keys
    for name in ("dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16"):
        assert get_model_spec(name).backbone.family == "dinov3"


def _chmv2_spec() -> ModelSpec:
    """meta-chm-v2 shrunk: 4 blocks of 64, head width 32, hidden 16 (the published wiring and bins)."""
    spec = get_model_spec("meta-chm-v2")
    spec = _reduced(spec, 4, (0, 1, 2, 3), embed_dim=64, num_heads=4)
    head = dataclasses.replace(spec.head, out_channels=(8, 16, 32, 64), features=32, hidden_channels=16)
    return dataclasses.replace(spec, head=head)


def _chmv2_layouts(hf_model, tmp_path) -> dict[str, object]:
    """Hugging Face's folder and its model.safetensors; Meta's two files as a folder, and the head file alone."""
    saved = save_chmv2_layouts(hf_model, tmp_path)
    return {
        "hf folder": saved["hf"],
        "hf file": saved["hf"] / "model.safetensors",
        "meta folder": saved["meta"],
        "meta head file": saved["meta"] / SAT_HEAD,
    }


def test_chmv2_parity_with_transformers_in_both_layouts(tmp_path):
    spec = _chmv2_spec()
    hf_model = chmv2_hf_model(spec)
    rgb = torch.rand(2, 3, 128, 96, generator=torch.Generator().manual_seed(4))
    mean = torch.tensor(spec.normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.normalization.std).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = hf_model(pixel_values=(rgb - mean) / std).predicted_depth
    assert reference.shape == (2, 128, 96) and reference.std() > 0.01
    for label, path in _chmv2_layouts(hf_model, tmp_path).items():
        loaded = load_height_model(ModelRef(spec, str(path)))
        with torch.no_grad():
            heights = loaded.model(rgb)[:, 0]
        assert (heights - reference).abs().max().item() < 1e-4, label
        if label.startswith("meta"):
            assert loaded.backbone_weights != loaded.head_weights, "two files, two identities"


def test_chmv2_bins_are_the_published_mixed_log_linear_centres():
    bins = HeightBins(256, 0.001, 96.0 / 8, 8.0, "chmv2_mixlog")
    centres = bin_centres(bins)
    assert centres[0].item() == pytest.approx(0.001) and centres[-1].item() == pytest.approx(12.0)
    t = 100 / 255
    log = math.exp(math.log(0.001) + (math.log(12.0) - math.log(0.001)) * 100 / 255)
    linear = 0.001 + (12.0 - 0.001) * 100 / 255
    assert centres[100].item() == pytest.approx((1 - t) * log + t * linear, rel=1e-5)
    logits = torch.zeros(1, 256, 1, 1)
    logits[0, 100] = 3.0
    assert bins_to_height(logits, bins).item() == pytest.approx(8 * centres[100].item(), rel=1e-5)


def test_chmv2_files_that_do_not_belong_together_or_alone_are_refused(tmp_path):
    spec = _chmv2_spec()
    layouts = _chmv2_layouts(chmv2_hf_model(spec), tmp_path)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (layouts["meta head file"]).rename(lonely / SAT_HEAD)
    with pytest.raises(WeightsNotFoundError, match=r"is Meta's head file for meta-chm-v2, and no backbone file dinov3_vitl16_pretrain_sat493m\*\.pth"):
        load_height_model(ModelRef(spec, str(lonely / SAT_HEAD)))
    with pytest.raises(WeightsNotFoundError, match=r"holds no weights for meta-chm-v2; it should hold model.safetensors or Meta's"):
        load_height_model(ModelRef(spec, str(tmp_path / "meta")))
    bigger = _reduced(spec, 5, (0, 1, 2, 4))
    with pytest.raises(WeightsMismatchError, match="do not fit meta-chm-v2"):
        load_height_model(ModelRef(bigger, str(layouts["hf file"])))


def test_gated_download_sends_hf_token_and_says_how_to_get_access(tmp_path, local_server, monkeypatch):
    spec = _chmv2_spec()
    layouts = _chmv2_layouts(chmv2_hf_model(spec), tmp_path)
    server = local_server(layouts["hf folder"], token="hf_secret")
    spec = dataclasses.replace(spec, weights=(dataclasses.replace(spec.weights[0], url=f"{server.url}/model.safetensors"),))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(DownloadError, match=r"refused \(HTTP 401, no HF_TOKEN set\).*set HF_TOKEN.*chmv2-downloads"):
        resolve_weights(spec)
    monkeypatch.setenv("HF_TOKEN", "wrong")
    with pytest.raises(DownloadError, match="the token refused"):
        resolve_weights(spec)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    resolved = resolve_weights(spec)
    assert resolved.path == cached_path(spec, spec.weights[0]) and find_cached(spec) == resolved.path


def test_meta_files_in_the_cache_are_found_and_offline_errors_say_both_routes(tmp_path, isolated_cache, monkeypatch):
    spec = _chmv2_spec()
    with pytest.raises(OfflineError, match=r"model.safetensors or Meta's dinov3_vitl16_chmv2_dpt_head\*\.pth with .*HF_TOKEN.*ai.meta.com"):
        resolve_weights(spec, offline=True)
    layouts = _chmv2_layouts(chmv2_hf_model(spec), tmp_path)
    folder = isolated_cache / "weights" / "meta-chm-v2"
    folder.mkdir(parents=True)
    (layouts["meta folder"] / SAT_HEAD).rename(folder / SAT_HEAD)
    assert find_cached(spec) is None, "a head without its backbone is not usable"
    (layouts["meta folder"] / SAT_BACKBONE).rename(folder / SAT_BACKBONE)
    resolved = resolve_weights(spec, offline=True)
    assert (resolved.path.name, resolved.backbone_path.name) == (SAT_HEAD, SAT_BACKBONE)


def test_default_model_is_v2_when_its_weights_are_cached_beside_v1(isolated_cache):
    from canopy.models.defaults import default_model

    v1 = get_model_spec("meta-chm-v1-huge")
    cached_path(v1, v1.weights[0]).parent.mkdir(parents=True)
    cached_path(v1, v1.weights[0]).write_bytes(b"placeholder")
    assert default_model() == "meta-chm-v1-huge"
    folder = isolated_cache / "weights" / "meta-chm-v2"
    folder.mkdir(parents=True)
    (folder / SAT_HEAD).write_bytes(b"placeholder")
    (folder / SAT_BACKBONE).write_bytes(b"placeholder")
    assert default_model() == "meta-chm-v2"


@pytest.fixture(scope="module")
def chmv2_files(tmp_path_factory):
    """A reduced CHMv2 in every published layout, made once for the prediction tests."""
    spec = _chmv2_spec()
    return spec, _chmv2_layouts(chmv2_hf_model(spec, seed=5), tmp_path_factory.mktemp("chmv2"))


@pytest.mark.parametrize("layout", ["hf folder", "meta folder", "meta head file"])
def test_chmv2_predicts_on_neon_from_each_published_layout(chmv2_files, layout, tmp_path):
    spec, layouts = chmv2_files
    out = tmp_path / "chm.tif"
    with pytest.warns(ResolutionWarning):
        result = predict(NEON / "TEAK_043_rgb.tif", model=ModelRef(spec), weights=layouts[layout], out=out)
    inner = result.values[1:-1, 1:-1]
    assert np.isfinite(inner).all() and (inner > 0).all() and float(inner.std()) > 0
    with rasterio.open(out) as dst:
        tags = dst.tags()
        assert dst.res == (0.6, 0.6) and tags["canopy_chip_size"] == "416" and tags["canopy_model"] == "meta-chm-v2"
    reference = predict(NEON / "TEAK_043_rgb.tif", model=ModelRef(spec), weights=layouts["hf file"], out=tmp_path / "ref.tif")
    assert np.nanmax(np.abs(result.values - reference.values)) < 1e-3


def test_train_fits_a_head_on_the_dinov3_satellite_backbone_and_models_lists_it(tmp_path):
    from click.testing import CliRunner

    from canopy.cli.main import cli
    from canopy.models.model_file import read_model_file

    out = tmp_path / "sat_head.safetensors"
    args = ["train", "--backbone", "dinov3_vitl16_sat", "--weights", "random", "--epochs", "1", "--val-fraction", "0.5",
            "--chip-size", "112", "--out", str(out)]
    for plot in ("TEAK_044", "TEAK_045"):
        args += ["--imagery", str(NEON / f"{plot}_rgb.tif"), "--reference", str(NEON / f"{plot}_chm_1m.tif")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    trained = read_model_file(out)
    assert trained.spec.backbone_name == "dinov3_vitl16_sat" and trained.spec.backbone.family == "dinov3"
    assert trained.spec.normalization.mean == (0.430, 0.411, 0.296)

    listing = CliRunner().invoke(cli, ["models", "--json"])
    import json

    rows = {row["name"]: row for row in json.loads(listing.output)}
    for name in ("dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16", "dinov3_vitl16_sat", "meta-chm-v2"):
        assert rows[name]["licence"] == "DINOv3 License" and rows[name]["cached"] is False, name
    assert rows["meta-chm-v2"]["patch_size"] == 16


def test_registry_refuses_unknown_families_bin_strategies_and_half_a_file_pair():
    from canopy.errors import ModelConfigError
    from canopy.models.registry import parse_model

    record = {
        "name": "x", "description": "x", "licence": "x", "ground_resolution": 0.6, "chip_size": 32,
        "backbone": {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 16, "img_size": 32, "family": "dinov3"},
        "head": {"type": "dpt-bins", "layers": [0, 0, 1, 1], "bins_strategy": "chmv2_mixlog"},
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
    }
    assert parse_model(record).backbone.family == "dinov3"
    for part, key, value, message in [
        ("backbone", "family", "dinov4", "family must be 'dinov2' or 'dinov3'"),
        ("backbone", "num_heads", 32, "head size 2 must be a multiple of 4"),
        ("head", "bins_strategy", "log", "bins_strategy must be 'linear' or 'chmv2_mixlog'"),
        ("head", "bins_range", [12.0, 0.001], "two increasing positive numbers"),
    ]:
        bad = {**record, part: {**record[part], key: value}}
        with pytest.raises(ModelConfigError, match=message):
            parse_model(bad)
    with pytest.raises(ModelConfigError, match="meta_files lists the head's file pattern, then the backbone's"):
        parse_model({**record, "meta_files": ["head*.pth"]})
