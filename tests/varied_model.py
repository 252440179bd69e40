"""A seeded model file whose heights vary by metres: a random ViT-S/14 backbone and a random DPT head
with its last convolution scaled up, so that a wrong input pixel (1/255) moves heights by millimetres
while the kernels' rounding moves them by far less."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from canopy.models import HeightModel, get_model_spec
from canopy.models.model_file import save_model_file
from canopy.models.vision_transformer import build_vision_transformer

SPREAD_M = 1.0
"""The standard deviation of the heights, in metres, on a NEON chip; their mean is about twice that."""


def varied_model_file(path: Path, backbone: str = "dinov2_vits14", seed: int = 0) -> Path:
    """Write the model file and return its path (usable as ``model=`` with the seeded random backbone).

    The last convolution is rescaled so that its output on a NEON chip has a spread of ``SPREAD_M`` / scale
    around 2 ``SPREAD_M`` / scale, where ``scale * softplus`` is nearly linear.
    """
    from rasters import NEON

    spec = get_model_spec(backbone)
    model = HeightModel(spec, build_vision_transformer(spec.backbone)).eval()
    model.backbone.init_random(seed)
    model.init_head_random(seed)
    with rasterio.open(NEON / "TEAK_043_rgb.tif") as src:
        chip = torch.from_numpy(src.read(window=((0, 112), (0, 112))).astype(np.float32) / 255)[None]
    last = model.head.conv_depth.head[-1]
    with torch.no_grad():
        captured = []
        handle = last.register_forward_hook(lambda module, args, out: captured.append(out))
        model(chip)
        handle.remove()
        raw, scale = captured[0], model.head.scale
        gain = SPREAD_M / scale / raw.std().item()
        last.weight.mul_(gain)
        last.bias.copy_((last.bias - raw.mean()) * gain + 2 * SPREAD_M / scale)
    save_model_file(path, spec, f"random(seed={seed})", model.head, {"note": "seeded random head, last conv scaled"}, {})
    return path


def spread_m(heights: np.ndarray) -> float:
    """Metres between a map's 1st and 99th height percentiles: over a metre, so that a bound of 1e-4 m is a real test."""
    low, high = np.nanpercentile(heights, [1, 99])
    return float(high - low)
