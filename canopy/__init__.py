"""canopy: canopy height maps from very-high-resolution RGB imagery."""

from canopy._version import __version__
from canopy.models import get_model_spec, list_models, load_backbone

__all__ = ["__version__", "get_model_spec", "list_models", "load_backbone"]
