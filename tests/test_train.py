"""canopy train on NEON plots: the loss goes down, the file round-trips, predict uses it, mismatches are refused."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import rasterio
import torch
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from canopy.cli.main import cli
from canopy.errors import ModelFileError, RandomWeightsWarning, TrainingError
from canopy.models import height_model
from canopy.models.height_model import ModelRef, load_height_model
from canopy.models.model_file import read_model_file
from canopy.prediction import predict
from canopy.training import TrainSettings, train
from canopy.training.trainer import split_by_image
from rasters import NEON

PLOTS = ("TEAK_044", "TEAK_045")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "head.safetensors"
    reports = []
    with pytest.warns(RandomWeightsWarning):
        result = train(
            [NEON / f"{p}_rgb.tif" for p in PLOTS],
            [NEON / f"{p}_chm_1m.tif" for p in PLOTS],
            out,
            weights="random",
            settings=TrainSettings(epochs=20, val_fraction=0.5, chip_size=112),
            progress=reports.append,
        )
    return out, result, reports


def test_loss_goes_down_and_best_epoch_is_kept(trained):
    _, result, reports = trained
    losses = [r.train_loss for r in reports]
    assert len(losses) == 20
    assert min(losses[-3:]) < 0.8 * losses[0]
    val = [r.val_mae for r in reports]
    best = result.best_epoch
    assert val[best - 1] == min(val)
    assert result.validation.mae == pytest.approx(min(val), rel=1e-5)
    assert result.history == tuple(reports)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.best_epoch = 1


def test_validation_holds_out_whole_images(trained):
    _, result, _ = trained
    train_images, val_images = list(result.train_images), list(result.val_images)
    assert len(val_images) == 1 and not set(train_images) & set(val_images)
    assert sorted(train_images + val_images) == [f"{p}_rgb.tif" for p in PLOTS]
    with pytest.raises(TrainingError, match="at least two"):
        split_by_image(["a"], 0.2, 0)


def test_model_file_round_trips(trained):
    out, result, _ = trained
    model_file = read_model_file(out)
    assert model_file.backbone_weights == "random(seed=0)"
    assert model_file.spec.backbone_name == "dinov2_vits14" and model_file.spec.chip_size == 112
    assert list(model_file.spec.head.layers) == [2, 5, 8, 11]
    assert model_file.validation == dataclasses.asdict(result.validation)
    assert model_file.training["best_epoch"] == result.best_epoch
    assert model_file.training["train_pixels"] > 1000
    with pytest.warns(RandomWeightsWarning):
        loaded = load_height_model(ModelRef.resolve(out))
    for key, value in loaded.model.head.state_dict().items():
        assert torch.equal(value, model_file.head_state[key])


def test_predict_with_the_model_file(trained, tmp_path, monkeypatch):
    out, _, _ = trained
    target = tmp_path / "map.tif"
    reads = []
    read = height_model.read_model_file
    monkeypatch.setattr(height_model, "read_model_file", lambda path: reads.append(path) or read(path))
    with pytest.warns(RandomWeightsWarning):
        result = predict(NEON / "TEAK_049_rgb.tif", model=out, out=target)
    assert len(reads) == 1  # the record, the head and its SHA-256 from one read of the file
    assert cog_validate(target, strict=True) == (True, [], [])
    with rasterio.open(target) as dst:
        assert dst.tags()["canopy_model"] == "head"
        assert dst.tags()["canopy_weights"] == "random(seed=0)"
        assert len(dst.tags()["canopy_head_weights"]) == 64
    assert float(result.max()) > 0.5


def test_a_model_file_travels_as_its_digest_and_a_changed_file_is_refused(trained, tmp_path):
    out, _, _ = trained
    copy = tmp_path / "head.safetensors"
    copy.write_bytes(out.read_bytes())
    ref = ModelRef.resolve(copy)
    shipped = pickle.loads(pickle.dumps(ref))
    assert ref.trained is not None and shipped.trained is None and shipped == ref
    assert len(pickle.dumps(ref)) < copy.stat().st_size / 4  # the head's tensors stay behind
    with pytest.warns(RandomWeightsWarning):
        here, there = load_height_model(ref), load_height_model(shipped)
    assert here.head_weights == there.head_weights == ref.file_sha256
    for name, tensor in here.model.head.state_dict().items():
        assert torch.equal(tensor, there.model.head.state_dict()[name])
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"head.safetensors changed since the run was planned; run it again"):
        load_height_model(shipped)


def test_a_different_backbone_is_refused(trained, tmp_path):
    out, _, _ = trained
    with pytest.raises(ModelFileError, match=r"was trained on dinov2_vits14 weights random\(seed=0\)"):
        predict(NEON / "TEAK_049_rgb.tif", model=out, weights="random(seed=3)", out=tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def test_models_command_describes_the_file(trained):
    out, _, _ = trained
    result = CliRunner().invoke(cli, ["models", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["backbone"] == "dinov2_vits14" and row["backbone_weights"] == "random(seed=0)"
    assert row["validation"]["mae"] > 0


def test_unpaired_inputs_are_refused(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--imagery", str(NEON / "TEAK_044_rgb.tif"), "--out", str(tmp_path / "h.safetensors"),
                                      "--reference", str(NEON / "TEAK_044_chm_1m.tif"), "--reference", str(NEON / "TEAK_045_chm_1m.tif")])
    assert result.exit_code == 1 and "pass one --reference per --imagery" in result.output
    missing = tmp_path / "TEAK_044_chm_1m.tif"
    result = CliRunner().invoke(cli, ["train", "--imagery", str(NEON / "TEAK_044_rgb.tif"), "--out", str(tmp_path / "h.safetensors"),
                                      "--reference", str(missing), "--weights", "random"])
    assert result.exit_code == 1 and f"Training input {missing} does not exist" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "h.safetensors").exists()


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not safetensors")
    with pytest.raises(ModelFileError, match="is not a safetensors file"):
        read_model_file(bogus)


def test_train_command_line(tmp_path):
    out = tmp_path / "cli_head.safetensors"
    args = ["train", "--weights", "random", "--epochs", "2", "--val-fraction", "0.5", "--chip-size", "112", "--out", str(out)]
    for plot in PLOTS:
        args += ["--imagery", str(NEON / f"{plot}_rgb.tif"), "--reference", str(NEON / f"{plot}_chm_1m.tif")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "epoch 2/2  loss" in result.output and "val MAE" in result.output
    assert f"wrote {out} (best epoch" in result.output
    assert read_model_file(out).training["epochs"] == 2


def test_reference_in_another_crs_and_resolution(tmp_path):
    """A reference warped to the neighbouring UTM zone at 2 m: the loss is computed on its own grid."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    source = NEON / "TEAK_044_chm_1m.tif"
    warped = tmp_path / "chm_utm10_2m.tif"
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:32610", src.width, src.height, *src.bounds, resolution=2.0)
        profile = {**src.profile, "crs": "EPSG:32610", "transform": transform, "width": width, "height": height}
        with rasterio.open(warped, "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.average, dst_nodata=-9999.0)
    from canopy.training.samples import build_samples

    with pytest.warns(RandomWeightsWarning):
        model = load_height_model(ModelRef.resolve("dinov2_vits14", "random")).model
    samples = build_samples(model, NEON / "TEAK_044_rgb.tif", warped, 112, torch.device("cpu"))
    assert samples[0].factor == 4  # 2 m reference pixels from 0.5 m model pixels
    valid = sum(int(torch.isfinite(s.target).sum()) for s in samples)
    assert 0.8 * 20 * 20 <= valid <= 25 * 25  # about the 40 m plot in 2 m pixels
    geographic = tmp_path / "chm_4326.tif"
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": width, "height": height}
        with rasterio.open(geographic, "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1))
    with pytest.raises(TrainingError, match="must be in a projected CRS"):
        build_samples(model, NEON / "TEAK_044_rgb.tif", geographic, 112, torch.device("cpu"))


def test_a_model_file_of_the_earlier_head_layout_says_to_train_again(tmp_path):
    from safetensors.torch import save_file

    old = tmp_path / "old.safetensors"
    save_file({"fusions.0.unit.conv1.weight": torch.zeros(1)}, str(old), metadata={"format": "canopy-height-model/1"})
    with pytest.raises(ModelFileError, match="trained with canopy before 0.2.*train it again"):
        read_model_file(old)

