"""Meta's aerial normalisation network: published layout, region-wide stretch, folding into the model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch

from canopy.errors import RandomWeightsWarning
from canopy.grid import snap_grid
from canopy.imagery import open_imagery, read_mosaic
from canopy.imagery.aerial_normalization import region_affine
from canopy.models.aerial_normalizer import QuantileRegressor, load_normalizer
from canopy.models.height_model import ModelRef, load_height_model
from canopy.prediction import predict
from rasters import NEON


def _published_normalizer(path, seed=0):
    """A training-framework checkpoint of the network, keys under ``backbone.`` as published."""
    torch.manual_seed(seed)
    network = QuantileRegressor()
    with torch.no_grad():  # random layers, but a last layer that predicts plausible percentiles
        network.fc4.weight.mul_(0.01)
        network.fc4.bias.copy_(torch.tensor([0.1, 0.1, 0.1, 0.6, 0.6, 0.6]))
    torch.save({"epoch": 3, "hyper_parameters": {"lr": 1e-3}, "state_dict": {f"backbone.{k}": v for k, v in network.state_dict().items()}}, path)
    return network


def test_published_layout_loads(tmp_path):
    network = _published_normalizer(tmp_path / "norm.ckpt")
    keys = network.state_dict()
    assert keys["input_layer.0.weight"].shape == (8, 3, 1, 1) and "input_layer.1.running_mean" in keys
    assert keys["conv_block5.3.weight"].shape == (128, 128, 3, 3)
    assert keys["fc1.0.weight"].shape == (64, 8192) and keys["fc4.weight"].shape == (6, 32)
    loaded = load_normalizer(tmp_path / "norm.ckpt")
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), network.eval()(x))


class _FixedQuantiles(torch.nn.Module):
    """Predicts satellite-like 5th/95th percentiles of 0.1 and 0.6 for every band of every tile."""

    def forward(self, x):
        return torch.tensor([[0.1, 0.1, 0.1, 0.6, 0.6, 0.6]]).expand(x.shape[0], 6)


def test_the_region_is_stretched_onto_the_predicted_percentiles():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opened = open_imagery([NEON / "TEAK_043_rgb.tif"])
    with opened:
        sources = opened.open()
        grid = snap_grid(sources[0].bounds, sources[0].crs, 0.1)
        gain, offset = region_affine(_FixedQuantiles(), sources, grid)
        rgb = read_mosaic(sources, grid).rgb.reshape(3, -1)
    stretched = gain[:, None] * rgb + offset[:, None]
    np.testing.assert_allclose(np.percentile(stretched, 5, axis=1), 0.1, atol=0.01)
    np.testing.assert_allclose(np.percentile(stretched, 95, axis=1), 0.6, atol=0.01)


def test_the_stretch_folds_into_the_models_normalisation(tmp_path):
    from varied_model import varied_model_file

    with pytest.warns(RandomWeightsWarning):
        model = load_height_model(ModelRef.resolve(str(varied_model_file(tmp_path / "varied.safetensors")), "random")).model
    gain, offset = np.array([1.5, 0.8, 1.2]), np.array([-0.1, 0.05, 0.0])
    x = torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unstretched = model(x)
        expected = model((torch.tensor(gain, dtype=torch.float32).view(1, 3, 1, 1) * x + torch.tensor(offset, dtype=torch.float32).view(1, 3, 1, 1)))
        model.set_input_affine(gain, offset)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-4)
    assert (expected - unstretched).abs().median() > 0.1  # the stretch moves heights by far more than the bound


def test_predict_with_aerial_normalisation_records_it(tmp_path):
    _published_normalizer(tmp_path / "norm.ckpt")
    out = tmp_path / "aerial.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict(NEON / "TEAK_043_rgb.tif", model="dinov2_vits14", weights="random", normalize="aerial",
                normalizer_weights=tmp_path / "norm.ckpt", res=0.1, out=out)
    with rasterio.open(out) as dst:
        assert "aerial normalisation for the region: rgb * [" in dst.tags()["canopy_radiometry"]


def test_the_aerial_map_is_the_map_of_the_stretched_imagery(tmp_path):
    """The stretch must reach the model: the aerial map of the imagery equals the plain map of the imagery stretched by hand."""
    import re

    from varied_model import spread_m, varied_model_file

    _published_normalizer(tmp_path / "norm.ckpt")
    model = str(varied_model_file(tmp_path / "varied.safetensors"))
    options = dict(model=model, weights="random", res=0.2, chip_size=56, device="cpu", precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aerial = predict(NEON / "TEAK_043_rgb.tif", normalize="aerial", normalizer_weights=tmp_path / "norm.ckpt",
                         out=tmp_path / "aerial.tif", **options)
        plain = predict(NEON / "TEAK_043_rgb.tif", out=tmp_path / "plain.tif", **options).values
    with rasterio.open(tmp_path / "aerial.tif") as dst:
        numbers = re.search(r"rgb \* \[(.*)\] \+ \[(.*)\]", dst.tags()["canopy_radiometry"])
    gain, offset = (np.array([float(v) for v in numbers.group(i).split(",")]) for i in (1, 2))
    assert np.abs(gain - 1).max() > 0.1  # a real stretch, not the identity
    with rasterio.open(NEON / "TEAK_043_rgb.tif") as src:
        profile, rgb = src.profile, src.read().astype(np.float64) / 255
    stretched = np.clip(np.rint(255 * (gain[:, None, None] * rgb + offset[:, None, None])), 0, 255).astype(np.uint8)
    with rasterio.open(tmp_path / "stretched.tif", "w", **profile) as dst:
        dst.write(stretched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_hand = predict(tmp_path / "stretched.tif", out=tmp_path / "by_hand.tif", **options).values
    assert spread_m(aerial.values) > 1.0
    # the stretched file is rounded to whole 8-bit steps, which moves heights by millimetres; without the stretch, by decimetres
    assert np.nanmedian(np.abs(aerial.values - by_hand)) < 0.02  # 0.005 m measured
    assert np.nanmedian(np.abs(plain - by_hand)) > 0.3  # 0.77 m measured
