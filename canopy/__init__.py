"""canopy: canopy height maps from very-high-resolution RGB imagery.

The public API is short: :func:`predict` maps a region (from keywords or a :class:`PredictRequest`,
in this process or on a Dask cluster), :func:`evaluate` compares a map with lidar, :func:`train`
fits a height head on lidar, and :func:`load_backbone` and :func:`list_models` reach the model registry.
"""

from canopy._version import __version__
from canopy.evaluation import evaluate
from canopy.models import get_model_spec, list_models, load_backbone
from canopy.prediction import predict
from canopy.request import PredictRequest
from canopy.training import train

__all__ = ["PredictRequest", "__version__", "evaluate", "get_model_spec", "list_models", "load_backbone", "predict", "train"]
