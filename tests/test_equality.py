"""The equality promise, on any CPU: a chip's inputs do not depend on the blocks; one configuration gives the
same bytes; across threads, batch sizes, block sizes and CPU instruction sets, maps have the same NaN mask and
heights within the stated bound, with a model sensitive enough that a one-level input error would break it."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import rasterio
import torch

import canopy
from canopy.errors import ResumeNumericsWarning
from canopy.models.height_model import ModelRef, load_height_model
from canopy.request import PredictRequest
from canopy.runtime.inference import ChipPredictor
from canopy.runtime.numerics import AGREEMENT_BOUND_M
from canopy.runtime.plan import make_plan
from canopy.tiling.block_input import read_block
from rasters import NEON
from varied_model import spread_m, varied_model_file

RGB = NEON / "TEAK_045_rgb.tif"
BOUND = AGREEMENT_BOUND_M["fp32"]
OPTIONS = dict(res=0.2, chip_size=56, overlap=14, batch_size=4, block_size=4096, device="cpu", precision="fp32", offline=True)
STRIDE = 42


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(varied_model_file(tmp_path_factory.mktemp("model") / "varied.safetensors"))


def _predict(model: str, **changes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canopy.predict(RGB, model=model, **{**OPTIONS, **changes}).values


def _assert_agree(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: the NaN masks differ"
    worst = float(np.nanmax(np.abs(a - b)))
    assert worst <= BOUND, f"{what}: heights differ by {worst:.2e} m, more than the {BOUND:g} m promised"


def _chip_inputs(res: float, block_size: int, crs: str | None) -> dict:
    """Every chip's RGB and validity, read block by block as a run reads them."""
    request = PredictRequest.from_options(RGB, model="dinov2_vits14", weights="random", res=res, block_size=block_size,
                                          chip_size=112, overlap=28, crs=crs)
    size, chips = request.layout.size, {}
    with make_plan(request) as plan:
        sources = plan.sources.open()
        for block in plan.blocks():
            inp = read_block(sources, plan.grid, block, plan.layout, np.full(3, 0.5, np.float32))
            for r in inp.chip_rows:
                for c in inp.chip_cols:
                    at = (slice(r - inp.row0, r - inp.row0 + size), slice(c - inp.col0, c - inp.col0 + size))
                    chips[r, c] = (inp.rgb[:, at[0], at[1]].copy(), inp.valid[at].copy())
    return chips


@pytest.mark.parametrize("res, crs", [(0.1, None), (0.13, None), (0.2, None), (0.15, "EPSG:32610"), (0.1, "EPSG:3857")],
                         ids=["native", "0.13m", "0.2m", "utm10", "webmercator"])
def test_a_chips_inputs_do_not_depend_on_the_block_size(res, crs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = _chip_inputs(res, 10**5, crs)
        for block_size in (84, 168, 252):
            cut = _chip_inputs(res, block_size, crs)
            assert cut.keys() == whole.keys()
            for at, (rgb, valid) in whole.items():
                assert np.array_equal(cut[at][1], valid), f"chip {at}: validity differs with blocks of {block_size}"
                assert np.array_equal(cut[at][0], rgb), f"chip {at}: pixels differ with blocks of {block_size}"


def test_the_model_would_show_a_one_level_input_error(model):
    """The tests below have power: 1/255 on 1 % of a chip's pixels moves heights far beyond the bound."""
    predictor = ChipPredictor(load_height_model(ModelRef.resolve(model)).model, torch.device("cpu"))
    with rasterio.open(RGB) as src:
        chip = src.read(window=((100, 156), (100, 156))).astype(np.float32)[None] / 255
    nudged = chip.copy()
    nudged[:, :, np.random.default_rng(0).random((56, 56)) < 0.01] += 1 / 255
    heights = predictor(chip)
    assert spread_m(heights) > 1
    assert np.abs(predictor(nudged) - heights).max() > 10 * BOUND


def test_one_configuration_gives_the_same_bytes(model, tmp_path):
    first, second = tmp_path / "first.tif", tmp_path / "second.tif"
    for out in (first, second):
        _predict(model, out=out, block_size=STRIDE * 2)
    assert first.read_bytes() == second.read_bytes()


def test_threads_batches_and_blocks_change_heights_within_the_bound(model):
    reference = _predict(model)
    assert spread_m(reference) > 1
    _assert_agree(_predict(model, batch_size=1), reference, "batches of 1")
    _assert_agree(_predict(model, batch_size=7), reference, "batches of 7")
    _assert_agree(_predict(model, block_size=STRIDE), reference, f"blocks of {STRIDE} px")
    _assert_agree(_predict(model, block_size=STRIDE * 3), reference, f"blocks of {STRIDE * 3} px")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        _assert_agree(_predict(model), reference, f"{torch.get_num_threads()} thread(s) instead of {threads}")
    finally:
        torch.set_num_threads(threads)


def test_the_uncertainty_keeps_the_heights_promise_across_batches_and_blocks(model):
    def spread(**changes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return canopy.predict(RGB, model=model, uncertainty=True, **{**OPTIONS, **changes}).uncertainty.values

    reference = spread()
    assert np.nanmax(reference) > 0.1  # chips disagree by decimetres in their overlaps: a bound of 1e-4 m is a test
    _assert_agree(spread(batch_size=1), reference, "the uncertainty in batches of 1")
    _assert_agree(spread(block_size=STRIDE), reference, f"the uncertainty in blocks of {STRIDE} px")


def test_a_resume_in_another_configuration_warns_with_the_bound_and_agrees_within_it(model, tmp_path):
    out = tmp_path / "map.tif"

    def stop_after_three(progress):
        if progress.blocks_done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canopy.predict(RGB, model=model, out=out, progress=stop_after_three, **{**OPTIONS, "block_size": STRIDE})
    assert len(list((tmp_path / ".map.tif.partial").glob("r*_c*.npy"))) >= 3
    with pytest.warns(ResumeNumericsWarning, match=r"batch 4\).*\(.*batch 1\): the blocks of the two agree within 0.0001 m"):
        resumed = canopy.predict(RGB, model=model, out=out, resume=True, **{**OPTIONS, "block_size": STRIDE, "batch_size": 1})
    _assert_agree(resumed.values, _predict(model, block_size=STRIDE), "a resume with batches of 1")


_RUN = """
import sys, warnings
import numpy as np
import canopy
warnings.simplefilter("ignore")
heights = canopy.predict(sys.argv[1], model=sys.argv[2], res=0.2, chip_size=56, overlap=14, block_size=42, batch_size=3,
                         device="cpu", precision="fp32", offline=True)
np.save(sys.argv[3], heights.values)
print(__import__("torch").backends.cpu.get_cpu_capability())
"""


def test_emulated_instruction_sets_change_heights_within_the_bound(model, tmp_path):
    """The same request under this CPU's own kernels, under PyTorch's AVX2 kernels with oneDNN capped at AVX2, and
    under its plain kernels with oneDNN capped at SSE4.1: what machines of other kinds would compute, so that a
    dependence on the machine shows before it lands. The plain kernels differ from the native ones on every
    x86 machine, AVX2-only ones included, so the comparison always crosses an instruction set."""
    emulated = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
                "plain": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}}
    maps, capability = {}, {}
    for name, env in emulated.items():
        out = tmp_path / f"{name}.npy"
        run = subprocess.run([sys.executable, "-c", _RUN, str(RGB), model, str(out)], check=True, timeout=600,
                             capture_output=True, text=True, env={**os.environ, **env, "CANOPY_OFFLINE": "1"})
        maps[name], capability[name] = np.load(out), run.stdout.split()[-1]
    assert spread_m(maps["native"]) > 1
    assert capability["plain"] == "DEFAULT" and capability["native"] != "DEFAULT", capability
    _assert_agree(maps["avx2"], maps["native"], "AVX2 kernels")
    _assert_agree(maps["plain"], maps["native"], "plain (SSE4.1) kernels")
