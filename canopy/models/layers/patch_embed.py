"""Image to patch tokens."""

from __future__ import annotations

import torch
from torch import nn

from canopy.errors import PatchSizeError


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping square patches and project each to ``embed_dim``.

    Parameters
    ----------
    patch_size
        Side of a patch in pixels.
    in_chans
        Number of input bands.
    embed_dim
        Size of each token.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return tokens of shape (B, H/p * W/p, embed_dim), row-major over the patch grid.

        Raises
        ------
        PatchSizeError
            If the image's height or width is not a multiple of the patch size.
        """
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise PatchSizeError(
                f"Input of {height}x{width} px is not a multiple of the patch size {self.patch_size}; "
                f"pad it to {-(-height // self.patch_size) * self.patch_size}x"
                f"{-(-width // self.patch_size) * self.patch_size} px first."
            )
        return self.proj(x).flatten(2).transpose(1, 2)
