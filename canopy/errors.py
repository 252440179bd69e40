"""Every exception and warning canopy raises, named for what the user got wrong.

Each error also inherits the matching builtin so callers can catch ``ValueError`` or ``OSError``
as usual; the CLI turns any :class:`CanopyError` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import sys
import warnings


def warn(message: str, category: type[Warning]) -> None:
    """Issue a warning at the caller's line: the first frame outside the canopy package, however deep canopy called this
    from (a ``stacklevel`` counted by hand at each call pointed into canopy as soon as a call moved)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "canopy":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


class CanopyError(Exception):
    """Root of every error canopy raises on purpose."""


class UnknownModelError(CanopyError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelConfigError(CanopyError, ValueError):
    """A model configuration file that is malformed or incomplete."""


class PatchSizeError(CanopyError, ValueError):
    """An image whose sides are not multiples of the model's patch size."""


class WeightsNotFoundError(CanopyError, FileNotFoundError):
    """Weights that are neither at the given path, nor cached, nor downloadable."""


class OfflineError(CanopyError, OSError):
    """Weights that would need a download while offline mode is on."""


class DownloadError(CanopyError, OSError):
    """A weights download that failed; nothing is left in the cache."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file whose SHA-256 is not the published one."""


class UnsafeCheckpointError(CanopyError, ValueError):
    """A checkpoint that could only be read by unpickling arbitrary objects."""


class CheckpointFormatError(CanopyError, ValueError):
    """A file that is not a checkpoint canopy can read."""


class WeightsMismatchError(CanopyError, ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


class CanopyWarning(UserWarning):
    """Root of every warning canopy issues."""


class RandomWeightsWarning(CanopyWarning):
    """Random weights are in use: heights from such a model mean nothing."""


class BBoxError(CanopyError, ValueError):
    """A bounding box that is malformed, out of range, or misses the imagery."""


class ImageryError(CanopyError, ValueError):
    """Imagery that canopy cannot use as it is (no georeferencing, too few bands, ...)."""


class ImageryReadError(CanopyError, OSError):
    """An imagery file that cannot be opened or read (not a raster, truncated, missing)."""


class OutputPathError(CanopyError, OSError):
    """An output path whose directory does not exist or is not writable."""


class ResumeError(CanopyError, ValueError):
    """A ``--resume`` whose partial run was made with other settings."""


class DeviceError(CanopyError, ValueError):
    """A device or precision that is not available here."""


class AmbiguousNodataWarning(CanopyWarning):
    """Imagery whose declared nodata value is also a real pixel value; the message says which rule applies."""


class ChipLayoutError(CanopyError, ValueError):
    """A chip size or overlap that does not fit the model."""


class EvaluationError(CanopyError, ValueError):
    """Rasters that cannot be compared: no overlap, or no pixel valid in both."""


class HeightMapError(CanopyError, ValueError):
    """A canopy height map that cannot be analysed as it is: no CRS, degrees, no nodata, too coarse."""


class TrainingError(CanopyError, ValueError):
    """Training data that cannot train a head: unpaired files, no valid reference, too few images."""


class ModelFileError(CanopyError, ValueError):
    """A trained model file that is malformed, or used with a backbone it was not trained with."""


class UntrainedHeadWarning(RandomWeightsWarning):
    """A height head with seeded random weights: no head has been trained for this backbone yet."""


class SkippedImageryWarning(CanopyWarning):
    """A raster among several that cannot be used (no CRS, unreadable) and is left out."""


class ResolutionWarning(CanopyWarning):
    """Imagery far finer or coarser than the resolution a model was trained on."""


class SlowPrecisionWarning(CanopyWarning):
    """A precision asked for that this device runs far slower than fp32 (bf16 on a CPU without bf16 instructions)."""


class RequestError(CanopyError, ValueError):
    """A predict request with an unknown option, a value of the wrong kind, or options that exclude each other."""


class DistributedError(CanopyError, RuntimeError):
    """A Dask cluster that cannot be reached or was lost, or a worker that cannot do its part."""


class BlockFailedError(DistributedError):
    """A block whose task killed its Dask workers as many times as the cluster allows."""


class DamagedPartialWarning(CanopyWarning):
    """Blocks of a partial run that could not be read back on ``--resume``; they are computed again."""


class ResumeNumericsWarning(CanopyWarning):
    """A ``--resume`` in another configuration (threads, batch size, machine, PyTorch build) than the run it continues:
    the blocks of the two agree within the stated bound, not byte for byte."""


class LargeRegionWarning(CanopyWarning):
    """A region large enough that the run will be long; said before it starts."""

