"""canopy: canopy height maps from very-high-resolution RGB imagery.

The public API is short: :func:`predict` maps a region, :func:`load_backbone` and
:func:`list_models` reach the model registry.
"""

from canopy._version import __version__
from canopy.models import get_model_spec, list_models, load_backbone
from canopy.prediction import predict

__all__ = ["__version__", "get_model_spec", "list_models", "load_backbone", "predict"]
