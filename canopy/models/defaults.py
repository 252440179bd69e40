"""The model ``predict`` uses when none is named."""

from __future__ import annotations

from canopy.errors import WeightsNotFoundError
from canopy.models.registry import get_model_spec
from canopy.models.weights import cached_path, find_cached

DEFAULT_MODELS = ("meta-chm-v1-huge", "meta-chm-v1-huge-compressed")
"""Used when no model is named, the first whose weights are in the cache."""


def default_model() -> str:
    """The model ``predict`` uses when none is named: Meta's huge canopy-height model, once its weights are cached.

    Raises
    ------
    WeightsNotFoundError
        If none of the default models' weights are cached; the message says where to put them.
    """
    for name in DEFAULT_MODELS:
        if find_cached(get_model_spec(name)) is not None:
            return name
    spec = get_model_spec(DEFAULT_MODELS[0])
    small = get_model_spec(DEFAULT_MODELS[1])
    raise WeightsNotFoundError(
        f"No --model given, and the default {spec.name} is not in the weights cache: download {spec.weights[0].url} "
        f"(2.9 GB, GPU) to {cached_path(spec, spec.weights[0])}, or {small.weights[0].url} (749 MB, CPU) to "
        f"{cached_path(small, small.weights[0])}, or pass --model NAME (see `canopy models`)."
    )
