"""canopy: canopy height maps from very-high-resolution RGB imagery.

The public API: :func:`predict` maps a region (from keywords or a :class:`PredictRequest`, in this
process or on a Dask cluster), and :func:`predict_to_file` writes one and returns its :class:`RunSummary`; :func:`open` reads a map as xarray; :func:`zonal_stats`,
:func:`cover`, :func:`height_classes` and :func:`plot` analyse it; :func:`trees` finds its trees
(:class:`TreeParameters`) and :func:`evaluate_trees` scores them against reference crowns;
:func:`forest` maps forest under the FAO definition (:class:`ForestDefinition`); :func:`change`
compares two dates;
:func:`evaluate` compares it with lidar; :func:`calibrate` fits a model's heights to the
user's lidar (and a prediction interval around them), :func:`apply_calibration` applies that and
:func:`prediction_interval` gives the interval around a map; :func:`aggregate` grids a map (and its trees' biomass, :mod:`canopy.analysis.allometry`,
``canopy.allometry``) on cells; :func:`train` fits a height head on lidar; :func:`load_backbone`, :func:`list_models`
and :func:`get_model_spec` reach the model registry.

Names are imported when first used, so ``import canopy`` (and ``canopy --help``) stays quick.
"""

from __future__ import annotations

import importlib

from canopy._version import __version__

_EXPORTS = {  # name: (module, attribute), or (module, None) for a module
    "PredictRequest": ("canopy.request", "PredictRequest"),
    "RunSummary": ("canopy.prediction", "RunSummary"),
    "Calibration": ("canopy.calibration", "Calibration"),
    "aggregate": ("canopy.analysis.aggregate", "aggregate"),
    "allometry": ("canopy.analysis.allometry", None),
    "apply_calibration": ("canopy.analysis.calibrated_map", "apply_calibration"),
    "calibrate": ("canopy.accuracy.calibration_fit", "calibrate"),
    "change": ("canopy.analysis.change", "change"),
    "cover": ("canopy.analysis.classes", "cover"),
    "evaluate": ("canopy.accuracy.evaluation", "evaluate"),
    "evaluate_change": ("canopy.accuracy.change_scoring", "evaluate_change"),
    "evaluate_trees": ("canopy.accuracy.tree_matching", "evaluate_trees"),
    "ForestDefinition": ("canopy.analysis.forest_rule", "ForestDefinition"),
    "forest": ("canopy.analysis.forest", "forest"),
    "get_model_spec": ("canopy.models", "get_model_spec"),
    "height_classes": ("canopy.analysis.classes", "height_classes"),
    "list_models": ("canopy.models", "list_models"),
    "load_backbone": ("canopy.models", "load_backbone"),
    "open": ("canopy.analysis.maps", "open_map"),
    "plot": ("canopy.analysis.plot", "plot"),
    "predict": ("canopy.prediction", "predict"),
    "prediction_interval": ("canopy.analysis.calibrated_map", "prediction_interval"),
    "predict_to_file": ("canopy.prediction", "predict_to_file"),
    "train": ("canopy.training", "train"),
    "TreeParameters": ("canopy.analysis.tree_tops", "TreeParameters"),
    "trees": ("canopy.analysis.trees", "trees"),
    "zonal_stats": ("canopy.analysis.zonal", "zonal_stats"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import a public name on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'canopy' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = importlib.import_module(module) if attribute is None else getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
