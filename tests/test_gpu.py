"""The CUDA path: run by `benchmarks/gpu_check.sh` on a machine with a GPU (`pytest -m gpu`), skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from canopy.models.height_model import ModelRef, load_height_model
from canopy.prediction import RunSummary, predict
from canopy.runtime.inference import ChipPredictor, auto_batch_size
from rasters import NEON

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize(("precision", "tolerance"), [(None, 1e-3), (torch.bfloat16, 0.5)])
def test_cuda_chips_match_the_cpu(precision, tolerance):
    model = load_height_model(ModelRef.resolve("dinov2_vits14", "random")).model
    chips = np.random.default_rng(0).random((3, 3, 224, 224), dtype=np.float32)
    cpu = ChipPredictor(model, torch.device("cpu"))(chips)
    cuda = ChipPredictor(model, torch.device("cuda"), precision)(chips)
    assert cuda.dtype == np.float32 and cuda.shape == (3, 224, 224)
    assert np.abs(cuda - cpu).max() <= tolerance


def test_predict_on_cuda_in_auto_precision_matches_the_cpu(tmp_path):
    gpu = predict(NEON / "TEAK_043_rgb.tif", model="dinov2_vits14", weights="random", res=0.2, device="cuda",
                  out=tmp_path / "gpu.tif")
    cpu = predict(NEON / "TEAK_043_rgb.tif", model="dinov2_vits14", weights="random", res=0.2, device="cpu",
                  precision="fp32", out=tmp_path / "cpu.tif")
    assert RunSummary.from_attrs(gpu.attrs).chips == RunSummary.from_attrs(cpu.attrs).chips
    np.testing.assert_allclose(gpu.values, cpu.values, atol=0.5, equal_nan=True)
    assert auto_batch_size(torch.device("cuda"), 256) == 32
