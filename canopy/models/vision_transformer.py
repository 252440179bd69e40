"""DINOv2 and DINOv3 vision transformers, with DINOv2's own ``forward_features`` and
``get_intermediate_layers`` API so their users feel at home.

The two share the blocks and everything after the tokens are made; they differ in how a token
knows where it is. DINOv2 adds learned position embeddings, interpolated to the chip's token grid;
DINOv3 adds nothing and rotates the patch tokens' queries and keys in every block (RoPE).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from canopy.models.layers import Mlp, PatchEmbed, SwiGLUFFN, TransformerBlock
from canopy.models.layers.attention import Rope
from canopy.models.layers.rope import RopePositionEmbedding
from canopy.models.registry import BackboneSpec


class VisionTransformer(nn.Module, ABC):
    """What DINOv2 and DINOv3 backbones share: patch embedding, class token, blocks, final norm.

    Parameters
    ----------
    spec
        The architecture: sizes, patch size, feed-forward type, register tokens, position handling.
    in_chans
        Number of input bands.
    """

    def __init__(self, spec: BackboneSpec, in_chans: int = 3) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.embed_dim
        self.embed_dim = dim
        self.patch_size = spec.patch_size
        self.num_register_tokens = spec.num_register_tokens
        self.n_blocks = spec.depth
        self.patch_embed = PatchEmbed(spec.patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        ffn = SwiGLUFFN if spec.ffn == "swiglu" else Mlp
        hidden = int(dim * spec.mlp_ratio)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                spec.num_heads,
                ffn(dim, hidden),
                spec.layerscale_init,
                spec.attention == "explicit",
                spec.norm_eps,
                spec.mask_k_bias,
            )
            for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.head = nn.Identity()

    def init_random(self, seed: int = 0) -> None:
        """Fill every parameter with DINOv2's initialisation from a fixed seed (tests, benchmarks)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith(("ls1.gamma", "ls2.gamma")):
                    param.fill_(self.spec.layerscale_init)
                elif "norm" in name and name.endswith("weight"):
                    param.fill_(1.0)
                elif name.endswith("bias"):
                    param.zero_()
                elif name in ("cls_token", "register_tokens", "storage_tokens"):
                    param.normal_(0.0, 1e-6, generator=generator)
                else:
                    param.normal_(0.0, 0.02, generator=generator).clamp_(-0.04, 0.04)

    @abstractmethod
    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed an image batch and add the class and register tokens (and positions, where added)."""

    def rope(self, x: torch.Tensor) -> Rope | None:
        """The rotary positions the blocks apply for images like ``x``; None where positions are added to the tokens."""
        return None

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Run every block and return DINOv2's feature dictionary.

        Parameters
        ----------
        x
            Normalised images (B, C, H, W); H and W multiples of the patch size.

        Returns
        -------
        dict
            ``x_norm_clstoken`` (B, C), ``x_norm_regtokens`` (B, R, C), ``x_norm_patchtokens``
            (B, N, C), ``x_prenorm`` (B, 1 + R + N, C) and ``masks`` (None).

        Raises
        ------
        PatchSizeError
            If H or W is not a multiple of the patch size.
        """
        tokens, rope = self.prepare_tokens(x), self.rope(x)
        for block in self.blocks:
            tokens = block(tokens, rope)
        normed = self.norm(tokens)
        first_patch = 1 + self.num_register_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1:first_patch],
            "x_norm_patchtokens": normed[:, first_patch:],
            "x_prenorm": tokens,
            "masks": None,
        }

    def _block_outputs(self, x: torch.Tensor, n: int | Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the last ``n`` blocks, or of the blocks whose indices are listed."""
        wanted = set(range(self.n_blocks - n, self.n_blocks)) if isinstance(n, int) else set(n)
        if not wanted or min(wanted) < 0 or max(wanted) >= self.n_blocks:
            raise ValueError(f"Block indices {sorted(wanted)} are outside 0..{self.n_blocks - 1}.")
        tokens, rope = self.prepare_tokens(x), self.rope(x)
        outputs = []
        for index, block in enumerate(self.blocks):
            if index > max(wanted):
                break
            tokens = block(tokens, rope)
            if index in wanted:
                outputs.append(tokens)
        return outputs

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Patch tokens (and optionally the class token) of intermediate blocks.

        Parameters
        ----------
        x
            Normalised images (B, C, H, W).
        n
            The last ``n`` blocks, or a list of block indices.
        reshape
            Return patch tokens as feature maps (B, C, H/p, W/p) instead of (B, N, C).
        return_class_token
            Pair each output with its class token (B, C).
        norm
            Apply the final LayerNorm to each output.

        Returns
        -------
        tuple
            One tensor per block, or one (patch tokens, class token) pair per block.
        """
        outputs = self._block_outputs(x, n)
        if norm:
            outputs = [self.norm(out) for out in outputs]
        class_tokens = [out[:, 0] for out in outputs]
        patches = [out[:, 1 + self.num_register_tokens :] for out in outputs]
        if reshape:
            rows, cols = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
            patches = [p.reshape(p.shape[0], rows, cols, -1).permute(0, 3, 1, 2).contiguous() for p in patches]
        if return_class_token:
            return tuple(zip(patches, class_tokens))
        return tuple(patches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised class token, as DINOv2's hub models do in eval mode."""
        return self.head(self.forward_features(x)["x_norm_clstoken"])


class DinoVisionTransformer(VisionTransformer):
    """A DINOv2 backbone (and Meta's v1 canopy-height ViTs), parameter names as in Meta's checkpoints.

    Parameters
    ----------
    spec
        The architecture; ``img_size`` and the ``interpolate_*`` fields say how the learned position
        embeddings are interpolated to other token grids.
    in_chans
        Number of input bands.
    """

    def __init__(self, spec: BackboneSpec, in_chans: int = 3) -> None:
        super().__init__(spec, in_chans)
        dim = spec.embed_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + spec.grid_size**2, dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, spec.num_register_tokens, dim)) if spec.num_register_tokens else None
        )

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for an image of ``height`` x ``width`` px.

        Bicubic interpolation of the trained grid, done in float32 the way the original does for
        each variant (DINOv2: an offset of 0.1 tokens for the plain models, antialiasing for the
        register models; Meta's canopy-height backbones: by size with corners aligned); the trained
        embeddings are returned as they are for a square image of the trained size.
        """
        rows, cols = height // self.patch_size, width // self.patch_size
        trained = self.spec.grid_size
        if rows == cols == trained:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        patch_pos = patch_pos.reshape(1, trained, trained, self.embed_dim).permute(0, 3, 1, 2)
        offset = self.spec.interpolate_offset
        if self.spec.interpolate_align_corners:  # Meta's canopy-height backbones: by size, corners aligned
            patch_pos = F.interpolate(patch_pos, size=(rows, cols), mode="bicubic", align_corners=True)
        elif offset:
            scale = ((rows + offset) / trained, (cols + offset) / trained)
            patch_pos = F.interpolate(
                patch_pos, scale_factor=scale, mode="bicubic", antialias=self.spec.interpolate_antialias
            )
        else:
            patch_pos = F.interpolate(
                patch_pos, size=(rows, cols), mode="bicubic", antialias=self.spec.interpolate_antialias
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, self.embed_dim)
        return torch.cat((cls_pos, patch_pos), dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed an image batch and add class token, position embeddings and registers."""
        height, width = x.shape[-2:]
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(height, width).to(tokens.dtype)
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)
        return tokens


class Dinov3VisionTransformer(VisionTransformer):
    """A DINOv3 backbone: register ("storage") tokens, rotary positions, masked key bias; names as in Meta's checkpoints.

    Parameters
    ----------
    spec
        The architecture (``family: dinov3``); ``rope_base`` fills the RoPE periods until a checkpoint's are loaded.
    in_chans
        Number of input bands.
    """

    def __init__(self, spec: BackboneSpec, in_chans: int = 3) -> None:
        super().__init__(spec, in_chans)
        self.storage_tokens = nn.Parameter(torch.zeros(1, spec.num_register_tokens, spec.embed_dim))
        self.rope_embed = RopePositionEmbedding(spec.embed_dim // spec.num_heads, spec.rope_base)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed an image batch and put the class and register tokens in front; no positions are added."""
        tokens = self.patch_embed(x)
        batch = tokens.shape[0]
        prefix = (self.cls_token.expand(batch, -1, -1), self.storage_tokens.expand(batch, -1, -1))
        return torch.cat((*(p.to(tokens.dtype) for p in prefix), tokens), dim=1)

    def rope(self, x: torch.Tensor) -> Rope:
        """Sines and cosines of the patch grid of ``x``, shared by every block."""
        return self.rope_embed(x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)


def build_vision_transformer(spec: BackboneSpec) -> VisionTransformer:
    """The backbone class a spec's family names, with zero weights.

    Parameters
    ----------
    spec
        The architecture.

    Returns
    -------
    VisionTransformer
        A :class:`DinoVisionTransformer` or a :class:`Dinov3VisionTransformer`.
    """
    return Dinov3VisionTransformer(spec) if spec.family == "dinov3" else DinoVisionTransformer(spec)
