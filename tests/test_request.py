"""PredictRequest: validated once when made, the same from keywords, YAML and CLI flags, picklable, round-trips."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import FrozenInstanceError

import pytest
from click.testing import CliRunner

import canopy
from canopy.choices import Device, Precision
from canopy.cli.main import cli
from canopy.errors import BBoxError, ChipLayoutError, DeviceError, ImageryError, OutputPathError, RequestError
from canopy.grid import Region
from canopy.models.height_model import ModelRef
from canopy.prediction import RunSummary
from canopy.request import PredictRequest
from rasters import NEON

RGB = NEON / "TEAK_043_rgb.tif"
SMALL = dict(model="dinov2_vits14", weights="random", res=1.0, block_size=16, chip_size=28, device="cpu", precision="fp32")


def test_a_request_is_typed_frozen_and_picklable(tmp_path):
    request = PredictRequest.from_options(RGB, "-119.0113,36.99955,-119.0109,36.9998", out=tmp_path / "a.tif", **SMALL)
    assert request.region == Region((-119.0113, 36.99955, -119.0109, 36.9998), request.region.crs)
    assert request.region.crs.to_epsg() == 4326
    assert request.model == ModelRef(canopy.get_model_spec("dinov2_vits14"), "random")
    assert request.layout.size == 28 and request.layout.overlap == 7 and request.layout.patch == 14
    assert request.runtime.device is Device.CPU and request.runtime.precision is Precision.FP32
    assert request.imagery.sources == (str(RGB),) and not request.runtime.cluster.distributed
    assert pickle.loads(pickle.dumps(request)) == request
    with pytest.raises(FrozenInstanceError):
        request.layout = None


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"bbox": "1,2,3"}, BBoxError, "is not four numbers"),
        ({"bbox": "36.9,-119.1,37.0,-119.0"}, BBoxError, "swapped"),
        ({"bbox_crs": "EPSG:99999999"}, BBoxError, "--bbox-crs"),
        ({"out": "map.png"}, OutputPathError, "must end in .tif"),
        ({"chip_size": 30}, ChipLayoutError, "multiple of the patch size 14"),
        ({"device": "tpu"}, DeviceError, "Device 'tpu' is not one of auto, cpu, cuda, mps"),
        ({"precision": "int4"}, DeviceError, "Precision 'int4' is not one of auto, fp32, bf16, fp16"),
        ({"mosaic_order": "newest"}, ImageryError, "is not one of finest, latest, given"),
        ({"normalize": "satellite"}, RequestError, "is not one of none, aerial"),
        ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, RequestError, "--workers and --scheduler exclude each other"),
        ({"threads_per_worker": 2}, RequestError, "--threads-per-worker needs --workers"),
        ({"quicklook": True}, RequestError, "need --out"),
    ],
)
def test_bad_options_are_refused_when_the_request_is_made(options, error, message):
    values = {**SMALL, "bbox": "-119.0113,36.99955,-119.0109,36.9998", **options}
    with pytest.raises(error, match=message):
        PredictRequest.from_options(RGB, **values)


def test_yaml_round_trip_and_overrides(tmp_path):
    request = PredictRequest.from_options([RGB], (-119.0113, 36.99955, -119.0109, 36.9998), out=tmp_path / "a.tif",
                                          bands=(1, 2, 3), collections=["naip"], workers=2, **SMALL)
    path = tmp_path / "request.yaml"
    request.to_yaml(path)
    assert PredictRequest.from_yaml(path) == request
    assert PredictRequest.from_yaml(path, block_size=64).output.block_size == 64
    path.write_text(path.read_text() + "resolution: 2\n")
    with pytest.raises(RequestError, match=r"unknown keys \['resolution'\]"):
        PredictRequest.from_yaml(path)


def test_keywords_request_yaml_and_cli_make_the_same_map(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_keywords = canopy.predict(RGB, out=tmp_path / "keywords.tif", **SMALL)
        request = PredictRequest.from_options(RGB, out=tmp_path / "request.tif", **SMALL)
        canopy.predict(request)
    request = PredictRequest.from_options(RGB, out=tmp_path / "cli.tif", **SMALL)
    request.to_yaml(tmp_path / "cli.yaml")
    result = CliRunner().invoke(cli, ["predict", "--config", str(tmp_path / "cli.yaml"), "-q"])
    assert result.exit_code == 0, result.output
    expected = (tmp_path / "keywords.tif").read_bytes()
    assert (tmp_path / "request.tif").read_bytes() == expected == (tmp_path / "cli.tif").read_bytes()
    assert RunSummary.from_attrs(by_keywords.attrs).blocks_computed == 4
    with pytest.raises(RequestError, match="takes a PredictRequest alone"):
        canopy.predict(request, out=tmp_path / "other.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = canopy.predict_to_file(PredictRequest.from_options(RGB, out=tmp_path / "file.tif", **SMALL))
    assert (tmp_path / "file.tif").read_bytes() == expected
    assert summary == RunSummary.from_attrs(by_keywords.attrs)
    assert (summary.width, summary.height) == by_keywords.shape[::-1] and summary.crs == by_keywords.rio.crs.to_string()
    assert summary.res == abs(by_keywords.rio.resolution()[0])
    assert f"({summary.width} x {summary.height} px, {summary.res:g} m, {summary.crs})" in result.output
    with pytest.raises(RequestError, match="needs a request with an output path"):
        canopy.predict_to_file(PredictRequest.from_options(RGB, **SMALL))


def test_every_file_in_configs_is_read_and_the_example_request_states_the_real_defaults():
    import inspect

    import yaml

    from canopy.models.registry import config_dir, list_models

    configs = config_dir()
    found = sorted(p.relative_to(configs).as_posix() for p in configs.rglob("*") if p.is_file())
    assert found == ["models/dinov2.yaml", "models/dinov3.yaml", "models/meta_chm_v1.yaml", "models/meta_chm_v2.yaml",
                     "predict.yaml"], "a new file in configs/ needs a test that reads it"
    names = {spec.name for spec in list_models()}
    for path in sorted((configs / "models").glob("*.yaml")):
        entries = yaml.safe_load(path.read_text())
        listed = entries if isinstance(entries, list) else entries.get("models", entries)
        keys = [e["name"] for e in listed] if isinstance(listed, list) else list(listed)
        assert keys and set(keys) <= names, path.name
    example = configs / "predict.yaml"
    stated = yaml.safe_load(example.read_text())
    defaults = inspect.signature(PredictRequest.from_options).parameters
    assert stated and all(stated[key] == defaults[key].default for key in stated), stated
    request = PredictRequest.from_yaml(example, imagery=[RGB], model="dinov2_vits14", weights="random")
    assert request == PredictRequest.from_options(RGB, model="dinov2_vits14", weights="random")


def test_one_table_names_defaults_and_explains_every_predict_option():
    """canopy/predict_options.py is the one place: from_options, to_options, the CLI, configs/predict.yaml and
    docs/predict_options.md must agree with it."""
    import inspect
    from pathlib import Path

    import click
    import yaml

    from canopy.cli.predict import predict as predict_command
    from canopy.models.registry import config_dir
    from canopy.predict_options import OPTION, PREDICT_OPTIONS, markdown_table

    names = [o.name for o in PREDICT_OPTIONS]
    keywords = inspect.signature(PredictRequest.from_options).parameters
    assert set(keywords) == set(names), set(keywords) ^ set(names)
    for name, parameter in keywords.items():
        if parameter.default is not inspect.Parameter.empty:
            assert parameter.default == OPTION[name].default, name
    assert set(PredictRequest.from_options(RGB, model="dinov2_vits14", weights="random").to_options()) == set(names)
    cli = {p.name: p for p in predict_command.params if isinstance(p, click.Option) and p.name not in ("config", "quiet")}
    assert set(cli) == set(names), set(cli) ^ set(names)
    for name, option in cli.items():
        assert option.help == OPTION[name].help and OPTION[name].flag in option.opts, name
        if not option.multiple and not option.is_flag:
            assert option.default == OPTION[name].default, name
    text = (config_dir() / "predict.yaml").read_text()
    stated = yaml.safe_load(text)
    assert all(stated[key] == OPTION[key].default for key in stated), stated
    missing = [n for n in names if f"\n{n}:" not in text and f"\n# {n}:" not in text]
    assert not missing, f"configs/predict.yaml does not mention {missing}"
    docs = Path(__file__).resolve().parents[1] / "docs" / "predict_options.md"
    assert docs.read_text() == markdown_table(), "run: python -c 'from canopy.predict_options import markdown_table; print(markdown_table(), end=\"\")' > docs/predict_options.md"
