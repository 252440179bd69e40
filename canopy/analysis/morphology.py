"""Binary morphology with discs, by exact Euclidean distance transforms: the same result in any window that holds the disc."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dilated(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` (px, Euclidean) of a True pixel."""
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius


def eroded(mask: np.ndarray, radius: float) -> np.ndarray:
    """Pixels whose disc of ``radius`` lies wholly in the mask (outside the window counts as outside the mask)."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] > radius


def opened(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` opened with a disc of ``radius`` px: every part narrower than the disc is removed."""
    return dilated(eroded(mask, radius), radius)


def closed(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` closed with a disc of ``radius`` px: every opening narrower than the disc is filled."""
    return eroded(dilated(mask, radius), radius)
