"""The demo: the whole job on bundled NEON plots, offline, in a few minutes on a laptop CPU.

It trains a height head on five TEAK plots (one held out for validation), predicts three other
plots over their bounding boxes with ``predict``'s real pipeline, evaluates the maps against the
plots' lidar canopy height, and writes maps, styles, quicklooks, an evaluation plot and a report
that sets the metrics beside a baseline predicting the training mean everywhere.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rasterio.warp import transform_bounds

from canopy.errors import CanopyWarning, WeightsNotFoundError
from canopy.accuracy.evaluation import evaluate, evaluate_pairs, format_table, write_scatter
from canopy.io.atomic import atomic_path
from canopy.models.registry import get_model_spec
from canopy.models.weights import find_cached

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent / "data" / "neon"
TRAIN_PLOTS = ("TEAK_043", "TEAK_044", "TEAK_045", "TEAK_046", "TEAK_047")
TEST_PLOTS = ("TEAK_049", "TEAK_050", "OSBS_003")
CALIBRATION_PLOTS = TRAIN_PLOTS
"""The plots the demo calibrates on: the head's own, as the bundled plots with imagery are few; a user calibrates on other plots."""
DEMO_BACKBONE = "dinov2_vits14"
DEMO_CHIP = 112
BLOCK_SIZE = 10  # reference pixels (10 m): the bundled plots are 40 m across


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote and found."""

    out_dir: Path
    maps: list[Path]
    pretrained: bool
    notice: str
    report: dict


def plot_bbox(name: str) -> tuple[float, float, float, float]:
    """A bundled plot's extent in EPSG:4326 (minlon, minlat, maxlon, maxlat)."""
    import rasterio

    with rasterio.open(DATA / f"{name}_rgb.tif") as src:
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)


def backbone_notice(backbone: str) -> tuple[bool, str]:
    """Whether pretrained weights for ``backbone`` are cached, and the sentence that says what is used."""
    if find_cached(get_model_spec(backbone)) is not None:
        return True, f"Using the pretrained {backbone} backbone from the weights cache."
    return False, (
        f"NO PRETRAINED WEIGHTS: {backbone} is not in the weights cache and the demo runs offline, so it uses a "
        "seeded RANDOM backbone. The numbers below show that the pipeline works end to end; they are NOT "
        "canopy's accuracy. Place the checkpoint in the cache (see `canopy models`) and rerun for real results."
    )


@dataclass(frozen=True)
class NotebookModel:
    """The best model a notebook can show predictions with here, and the sentence that says what it is."""

    model: str
    real: bool
    note: str


def notebook_model(folder: Path, *, epochs: int = 40) -> NotebookModel:
    """Meta's canopy-height model when its weights are in the cache; otherwise a linear head trained here, in seconds,
    on the demo's training plots over a seeded random ViT-S/14 backbone, and said to be so.

    The random-backbone head's maps vary (about 1-35 m on the test plots) but only just beat the
    plots' mean height (MAE 10.2 m against 10.6 m, R² 0.03): enough to show what a map looks like,
    not what canopy can do. A DPT head over the random backbone collapses to the mean, so the
    notebooks use the linear one.

    Parameters
    ----------
    folder
        Where a trained head is written.
    epochs
        Training epochs for the head.

    Returns
    -------
    NotebookModel
    """
    from canopy.models.defaults import default_model
    from canopy.training import TrainSettings, train

    try:
        name = default_model()
        return NotebookModel(name, True, f"Predicted by {name} with its published weights, from the weights cache.")
    except WeightsNotFoundError:
        pass
    target = Path(folder) / "notebook_head.safetensors"
    settings = TrainSettings(head="linear", epochs=epochs, val_fraction=0.2, chip_size=DEMO_CHIP, learning_rate=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CanopyWarning)
        train([DATA / f"{p}_rgb.tif" for p in TRAIN_PLOTS], [DATA / f"{p}_chm_1m.tif" for p in TRAIN_PLOTS], target,
              backbone=DEMO_BACKBONE, weights="random", settings=settings, offline=True)
    return NotebookModel(str(target), False, (
        f"No published weights are in the cache, so this map comes from a seeded RANDOM {DEMO_BACKBONE} backbone with a "
        f"linear head trained just now on {len(TRAIN_PLOTS)} bundled plots: it varies like a map but barely beats the plots' "
        "mean height. It shows what canopy's output looks like, not its accuracy; with Meta's weights in the cache "
        "(`canopy models`) this notebook uses them."))


def run_demo(out_dir: Path, *, epochs: int = 40, say: Callable[[str], None] = log.info) -> DemoResult:
    """Train, predict and evaluate on the bundled plots.

    Parameters
    ----------
    out_dir
        Where everything goes; created if missing.
    epochs
        Training epochs for the head.
    say
        Receives one line per step, for the CLI to print.

    Returns
    -------
    DemoResult

    Raises
    ------
    CanopyError
        If a step fails.
    """
    from canopy.accuracy.calibration_fit import calibrate
    from canopy.prediction import predict
    from canopy.training import TrainSettings, train

    out_dir = Path(out_dir)
    (out_dir / "maps").mkdir(parents=True, exist_ok=True)
    pretrained, notice = backbone_notice(DEMO_BACKBONE)
    say(notice)
    weights = None if pretrained else "random"
    model_file = out_dir / "demo_head.safetensors"
    say(f"training a DPT head on {', '.join(TRAIN_PLOTS)} ({epochs} epochs, one plot held out for validation)")
    settings = TrainSettings(epochs=epochs, val_fraction=0.2, chip_size=DEMO_CHIP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CanopyWarning)  # the notice above already says what runs
        trained = train(
            [DATA / f"{p}_rgb.tif" for p in TRAIN_PLOTS],
            [DATA / f"{p}_chm_1m.tif" for p in TRAIN_PLOTS],
            model_file,
            backbone=DEMO_BACKBONE,
            weights=weights,
            settings=settings,
            offline=True,
        )
        maps, per_plot = [], {}
        for plot in TEST_PLOTS:
            target = out_dir / "maps" / f"{plot}_height.tif"
            bbox = plot_bbox(plot)
            say(f"predicting {plot} over bbox {','.join(f'{v:.6f}' for v in bbox)} (EPSG:4326)")
            predict(DATA / f"{plot}_rgb.tif", bbox, model=model_file, out=target, quicklook=True, offline=True)
            maps.append(target)
            per_plot[plot] = evaluate(target, DATA / f"{plot}_chm_1m.tif", block_size=BLOCK_SIZE).to_dict()
        say(f"calibrating the model's heights on the lidar of {', '.join(CALIBRATION_PLOTS)}")
        calibration_maps = []
        for plot in CALIBRATION_PLOTS:
            target = out_dir / "maps" / f"{plot}_height.tif"
            predict(DATA / f"{plot}_rgb.tif", plot_bbox(plot), model=model_file, out=target, offline=True)
            calibration_maps.append(target)
        calibration = calibrate(calibration_maps, [DATA / f"{p}_chm_1m.tif" for p in CALIBRATION_PLOTS],
                                out_dir / "calibration.json", plot=out_dir / "calibration.png")
    pairs = [(m, DATA / f"{p}_chm_1m.tif") for m, p in zip(maps, TEST_PLOTS)]
    combined = evaluate_pairs(pairs, block_size=BLOCK_SIZE)
    calibrated = evaluate_pairs(pairs, block_size=BLOCK_SIZE, transform=calibration.apply)
    mean_height = trained.train_mean_height
    baseline = evaluate_pairs([(None, r) for _, r in pairs], block_size=BLOCK_SIZE, constant=mean_height)
    write_scatter(pairs, combined, out_dir / "evaluation.png", title="demo: test plots vs lidar")
    report = {
        "notice": notice,
        "pretrained_backbone": pretrained,
        "backbone": DEMO_BACKBONE,
        "backbone_weights": trained.backbone_weights,
        "train_plots": list(trained.train_images),
        "validation_plots": list(trained.val_images),
        "test_plots": list(TEST_PLOTS),
        "block_size_px": BLOCK_SIZE,
        "test_metrics": combined.to_dict(),
        "calibration": {"plots": list(CALIBRATION_PLOTS), "file": "calibration.json", "cross_validation": calibration.validation,
                        "test_metrics_calibrated": calibrated.to_dict()},
        "baseline_training_mean": {"value_m": mean_height, **baseline.to_dict()},
        "per_plot": per_plot,
        "validation": trained.to_dict()["validation"] or {},
        "training": {**dataclasses.asdict(settings), **trained.to_dict()},
    }
    with atomic_path(out_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(_markdown(report))
    say(f"test plots, pooled ({combined.n} px):\n{format_table(combined)}")
    say(f"baseline (training mean {mean_height:.2f} m everywhere): MAE {baseline.mae:.3f} m, RMSE {baseline.rmse:.3f} m")
    say(f"calibrated on {', '.join(CALIBRATION_PLOTS)}, on the test plots: MAE {combined.mae:.3f} -> {calibrated.mae:.3f} m, "
        f"bias {combined.bias:.3f} -> {calibrated.bias:.3f} m")
    return DemoResult(out_dir, maps, pretrained, notice, report)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _markdown(report: dict) -> str:
    """The demo report as Markdown, its notice first."""
    m, b = report["test_metrics"], report["baseline_training_mean"]
    c = report["calibration"]
    k = c["test_metrics_calibrated"]
    lines = [
        "# canopy demo report",
        "",
        f"**{report['notice']}**",
        "",
        f"Backbone `{report['backbone']}` (weights `{report['backbone_weights']}`); DPT head trained on "
        f"{', '.join(report['train_plots'])}, validated on {', '.join(report['validation_plots'])}; "
        f"tested on {', '.join(report['test_plots'])} against their lidar canopy height (1 m).",
        "",
        "| test plots, pooled | MAE (m) | RMSE (m) | bias (m) | R² | block R² | pixels |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| canopy | {_fmt(m['mae'])} | {_fmt(m['rmse'])} | {_fmt(m['bias'])} | {_fmt(m['r2'])} | {_fmt(m['r2_block'])} | {m['n']} |",
        f"| baseline: training mean ({b['value_m']:.2f} m) | {_fmt(b['mae'])} | {_fmt(b['rmse'])} | {_fmt(b['bias'])} | "
        f"{_fmt(b['r2'])} | {_fmt(b['r2_block'])} | {b['n']} |",
        f"| canopy, calibrated on {', '.join(c['plots'])} | {_fmt(k['mae'])} | {_fmt(k['rmse'])} | {_fmt(k['bias'])} | "
        f"{_fmt(k['r2'])} | {_fmt(k['r2_block'])} | {k['n']} |",
        "",
        f"Block R² uses {report['block_size_px']} x {report['block_size_px']} px blocks (the plots are 40 m across).",
        "",
        "| plot | MAE (m) | RMSE (m) | bias (m) | R² |",
        "| --- | --- | --- | --- | --- |",
    ]
    for plot, pm in report["per_plot"].items():
        lines.append(f"| {plot} | {_fmt(pm['mae'])} | {_fmt(pm['rmse'])} | {_fmt(pm['bias'])} | {_fmt(pm['r2'])} |")
    lines += ["", "Maps: `maps/*.tif` (open in QGIS; the `.qml` styles load with them), quicklooks `maps/*.png`; "
              "scatter: `evaluation.png`; the calibration: `calibration.json` and `calibration.png`; numbers: `report.json`.", ""]
    return "\n".join(lines)
