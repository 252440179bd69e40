"""The model ``predict`` uses when none is named."""

from __future__ import annotations

from canopy.errors import WeightsNotFoundError
from canopy.models.registry import get_model_spec
from canopy.models.weights import cached_path, find_cached

DEFAULT_MODELS = ("meta-chm-v2", "meta-chm-v1-huge", "meta-chm-v1-huge-compressed")
"""Used when no model is named, the first whose weights are in the cache: CHMv2 before v1."""


def default_model() -> str:
    """The model ``predict`` uses when none is named: Meta's newest canopy-height model whose weights are cached.

    Raises
    ------
    WeightsNotFoundError
        If none of the default models' weights are cached; the message says where to put them.
    """
    for name in DEFAULT_MODELS:
        if find_cached(get_model_spec(name)) is not None:
            return name
    v2, spec, small = (get_model_spec(name) for name in DEFAULT_MODELS)
    raise WeightsNotFoundError(
        f"No --model given, and no default model is in the weights cache: download {spec.weights[0].url} "
        f"(2.9 GB, GPU) to {cached_path(spec, spec.weights[0])}, or {small.weights[0].url} (749 MB, CPU) to "
        f"{cached_path(small, small.weights[0])}, or put CHMv2's gated files in {cached_path(v2, v2.weights[0]).parent} "
        "(see `canopy models`), or pass --model NAME."
    )
