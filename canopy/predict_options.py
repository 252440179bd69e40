"""The options of a predict run, each named, defaulted and explained once.

The CLI's flags take their help and default from here (``canopy.cli.options.predict_option``);
:meth:`PredictRequest.from_options <canopy.request.PredictRequest.from_options>` and
:meth:`~canopy.request.PredictRequest.to_options` use the same names and defaults,
``configs/predict.yaml`` states them, and ``docs/predict_options.md`` is written from this table
(:func:`markdown_table`); ``tests/test_request.py`` fails when any of them disagrees. Validation
stays where the values become typed objects: the request's records, checked once when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canopy.choices import DEFAULT_BLOCK_SIZE


@dataclass(frozen=True)
class PredictOption:
    """One option: its keyword (and YAML key), its built-in default, one sentence of help, and whether its flag is
    the singular of a list's name (``--collection``, given once per value)."""

    name: str
    default: Any
    help: str
    singular: bool = False

    @property
    def flag(self) -> str:
        """The command line's spelling: ``--chip-size`` for ``chip_size``; one ``--collection`` per value of a list."""
        return "--" + (self.name[:-1] if self.singular else self.name).replace("_", "-")


PREDICT_OPTIONS: tuple[PredictOption, ...] = (
    PredictOption("imagery", None, "GeoTIFF file or URL, directory or glob of GeoTIFFs, STAC catalogue (.json) or STAC API "
                                   "(stac+https://…/search); repeatable."),
    PredictOption("bbox", None, "Region (west,south,east,north); default the imagery's extent."),
    PredictOption("bbox_crs", "EPSG:4326", "CRS of --bbox."),
    PredictOption("model", None, "Model from `canopy models`, or a file from `canopy train` (default: Meta's newest canopy-height "
                                 "model whose weights are cached, meta-chm-v2 then meta-chm-v1-huge)."),
    PredictOption("weights", None, "Checkpoint (a backbone's, or a whole published model's); 'random' for tests and benchmarks only."),
    PredictOption("out", None, "Output COG (.tif); a .qml style is written beside it."),
    PredictOption("res", None, "Output pixel size in metres (default: the model's)."),
    PredictOption("crs", None, "Output CRS (default: the imagery's, or the region's UTM zone)."),
    PredictOption("chip_size", None, "Chip side in px, a multiple of the patch size (default: the model's)."),
    PredictOption("overlap", None, "Overlap between chips in px (default: a quarter chip)."),
    PredictOption("batch_size", None, "Chips per model call  [default: 4 on the CPU, 32 chips of 256 px (scaled by area) on a GPU]"),
    PredictOption("block_size", DEFAULT_BLOCK_SIZE, "Block side in output px."),
    PredictOption("device", "auto", "Where the model runs: auto (CUDA, then MPS, then the CPU), cpu, cuda or mps."),
    PredictOption("precision", "auto", "auto (bf16 on GPUs and CPUs with bf16 instructions, fp32 elsewhere and for int8 models on "
                                       "the CPU), fp32, bf16 or fp16."),
    PredictOption("resume", False, "Continue an interrupted run with the same settings."),
    PredictOption("quicklook", False, "Also write <name>.png with a colour bar."),
    PredictOption("offline", None, "Never download weights (also CANOPY_OFFLINE=1)."),
    PredictOption("bands", None, "1-based band indexes of red, green, blue (default: by colour interpretation)."),
    PredictOption("collections", (), "STAC collection to search; repeatable.", singular=True),
    PredictOption("datetime", None, "STAC datetime filter, e.g. 2020-01-01/2022-12-31."),
    PredictOption("asset", None, "STAC asset key of the RGB image (default: visual, rgb, image or data)."),
    PredictOption("mosaic_order", "finest", "Which source wins where several overlap."),
    PredictOption("normalize", "none", "aerial: stretch aerial imagery to the satellite radiometry Meta's models expect (whole region)."),
    PredictOption("normalizer_weights", None, "Checkpoint of the aerial normalisation network."),
    PredictOption("workers", None, "Start a local Dask cluster of this many worker processes for the run."),
    PredictOption("threads_per_worker", None, "Threads of each local worker  [default: cores / workers]"),
    PredictOption("scheduler", None, "Run on an existing Dask cluster by its scheduler's address (tcp:// or tls://, docs/cluster.md)."),
    PredictOption("scheduler_file", None, "Run on an existing Dask cluster by its scheduler file."),
    PredictOption("calibration", None, "A file from `canopy calibrate`, applied to the heights (made for this model and weights); "
                                       "its prediction interval, if it has one, is written beside them (<name>.lower.tif, "
                                       "<name>.upper.tif)."),
    PredictOption("uncertainty", False, "Also write <name>.uncertainty.tif: each pixel's spread in metres (the model's height "
                                        "distribution and the overlapping chips' disagreement; docs/uncertainty.md)."),
    PredictOption("tta", False, "Predict each chip also flipped left-right, up-down and both, and average (4x the model's "
                                "time); with --uncertainty their spread is part of it."),
)

OPTION = {option.name: option for option in PREDICT_OPTIONS}


def markdown_table() -> str:
    """The options as the Markdown table of ``docs/predict_options.md``."""
    rows = [f"| `{o.flag}` (`{o.name}`) | {'' if o.default in (None, ()) else f'`{o.default}`'} | {o.help.replace('|', '/')} |"
            for o in PREDICT_OPTIONS]
    return "\n".join([
        "# The options of `canopy predict`",
        "",
        "Written from `canopy/predict_options.py` (the one place an option is named, defaulted and explained); the",
        "CLI flags, `canopy.predict`'s keywords, `PredictRequest.from_options`, the YAML keys of `--config` and",
        "`configs/predict.yaml` use the same names and defaults, and `tests/test_request.py` checks that they do.",
        "",
        "| flag (keyword, YAML key) | default | what it does |",
        "| --- | --- | --- |",
        *rows,
        "",
    ])
