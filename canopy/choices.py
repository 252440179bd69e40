"""The named choices of canopy's options, in one light module: the library checks values against them and
the CLI offers them, without importing PyTorch or GDAL to do so."""

from __future__ import annotations

from enum import StrEnum

from canopy.errors import DeviceError


class _Choice(StrEnum):
    """A choice among names; an unknown name is refused with a :class:`DeviceError` that lists them."""

    @classmethod
    def parse(cls, name: str) -> _Choice:
        """The member named ``name``.

        Raises
        ------
        DeviceError
            If ``name`` is not one of them.
        """
        try:
            return cls(name)
        except ValueError:
            raise DeviceError(f"{cls.__name__} {name!r} is not one of {', '.join(cls)}.") from None


class Device(_Choice):
    """Where the model runs; ``auto`` picks CUDA, then MPS, then the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(_Choice):
    """The floating-point precision the model runs in; ``auto`` as ``select_precision`` decides."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class MosaicOrder(StrEnum):
    """Which source wins where several overlap."""

    FINEST = "finest"
    """Finest resolution first, then most recent."""
    LATEST = "latest"
    """Most recent first, then finest."""
    GIVEN = "given"
    """The order the sources were named in (files of a directory by path)."""


class Normalize(StrEnum):
    """How imagery's radiometry is adapted before the model sees it."""

    NONE = "none"
    """As it is (8-bit / 255, or the region's percentile stretch)."""
    AERIAL = "aerial"
    """Stretched to the satellite radiometry of Meta's models by their normalisation network, once for the region."""


STRUCTURE = ("gap_fraction", "tree_count", "trees_per_ha", "crown_area_mean", "top_height", "forest_fraction")
"""The stand-structure statistics of ``canopy stats`` (``--stats structure``), documented in ``docs/stand_structure.md``."""

DEFAULT_BLOCK_SIZE = 2048
"""Block side (px) of every run, predict and the analyses alike: memory grows with its square, not with the region."""
