"""An independent re-implementation of the forward pass of Meta's canopy-height v1 models, for parity tests.

Written in the tests from the published code's arithmetic (facebookresearch/HighResCanopyHeight:
``models/backbone.py``, ``models/dpt_head.py``, ``inference.py``), with its module names, so a state
dict of this module is a checkpoint in the published layout. It shares no code with canopy's model.
Order of operations kept as published: attention ``softmax((q * scale) @ kᵀ) @ v``; class token plus
``0 * mask_token``; position embeddings by ``scale_factor`` of (tokens + 0.1) / trained grid with
``align_corners=True, recompute_scale_factor=True``; LayerNorm eps 1e-6; no final norm before the
head; bins as ReLU(logit) + 0.1, normalised, einsum with ``linspace(0.001, 10, 256)``, times 10.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Scale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, heads), _Scale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), _Mlp(dim), _Scale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Backbone(nn.Module):
    """SSLVisionTransformer as published: returns [patch map, class token] for each of ``out_indices``."""

    def __init__(self, dim, depth, heads, out_indices, patch=16, img_size=224):
        super().__init__()
        self.patch, self.out_indices = patch, tuple(out_indices)
        grid = img_size // patch
        self.patch_embed = _PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos(self, x, h, w):
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.pos_embed
        dim, side = x.shape[-1], int(math.sqrt(n))
        h0, w0 = h // self.patch + 0.1, w // self.patch + 0.1
        grid = self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(h0 / side, w0 / side), mode="bicubic", align_corners=True,
                             recompute_scale_factor=True)
        return torch.cat((self.pos_embed[:, 0].unsqueeze(0), grid.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)

    def forward(self, x):
        b, _, h, w = x.shape
        t = self.patch_embed(x)
        cls = self.cls_token + 0 * self.mask_token
        t = torch.cat((cls.expand(b, -1, -1), t), dim=1)
        t = t + self._pos(t, h, w)
        outs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in self.out_indices:
                patches = t[:, 1:].reshape(b, h // self.patch, w // self.patch, -1).permute(0, 3, 1, 2).contiguous()
                outs.append([patches, t[:, 0]])
        return outs


class _ConvModule(nn.Module):
    """mmcv's ConvModule as the published head uses it: ``.conv``, ReLU after (``act``) or before (``pre``) or none."""

    def __init__(self, cin, cout, k, bias, act=None, padding=None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2 if padding is None else padding, bias=bias)
        self.act = act

    def forward(self, x):
        if self.act == "pre":
            x = F.relu(x)
        x = self.conv(x)
        return F.relu(x) if self.act == "post" else x


class _PreAct(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = _ConvModule(c, c, 3, False, "pre"), _ConvModule(c, c, 3, False, "pre")

    def forward(self, x):
        inputs_ = x.clone()
        return self.conv2(self.conv1(x)) + inputs_


class _Fusion(nn.Module):
    def __init__(self, c, first):
        super().__init__()
        self.project = _ConvModule(c, c, 1, True)
        self.res_conv_unit1 = None if first else _PreAct(c)
        self.res_conv_unit2 = _PreAct(c)

    def forward(self, *inputs):
        x = inputs[0]
        if len(inputs) == 2:
            res = inputs[1]
            if x.shape != res.shape:
                res = F.interpolate(res, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(res)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class _Reassemble(nn.Module):
    def __init__(self, dim, channels):
        super().__init__()
        self.projects = nn.ModuleList(_ConvModule(dim, c, 1, True, padding=0) for c in channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(channels[0], channels[0], 4, 4), nn.ConvTranspose2d(channels[1], channels[1], 2, 2),
            nn.Identity(), nn.Conv2d(channels[3], channels[3], 3, 2, 1)])
        self.readout_projects = nn.ModuleList(nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU()) for _ in channels)

    def forward(self, inputs):
        out = []
        for i, (x, cls) in enumerate(inputs):
            shape = x.shape
            x = x.flatten(2).permute((0, 2, 1))
            x = self.readout_projects[i](torch.cat((x, cls.unsqueeze(1).expand_as(x)), -1))
            x = x.permute(0, 2, 1).reshape(shape)
            out.append(self.resize_layers[i](self.projects[i](x)))
        return out


class _Interpolate(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class _HeadDepth(nn.Module):
    def __init__(self, c, bins):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(c, c // 2, 3, 1, 1), _Interpolate(), nn.Conv2d(c // 2, 32, 3, 1, 1),
                                  nn.ReLU(), nn.Conv2d(32, bins, 1, 1, 0))

    def forward(self, x):
        return self.head(x)


class DecodeHead(nn.Module):
    """The published DPTHead with ``classify=True``: heights in units of 10 m over 256 bins."""

    def __init__(self, dim, channels, features=256, bins=256):
        super().__init__()
        self.bins = bins
        self.reassemble_blocks = _Reassemble(dim, channels)
        self.convs = nn.ModuleList(_ConvModule(c, features, 3, False) for c in channels)
        self.fusion_blocks = nn.ModuleList(_Fusion(features, i == 0) for i in range(4))
        self.project = _ConvModule(features, features, 3, True, "post")
        self.conv_depth = _HeadDepth(features, bins)

    def forward(self, inputs):
        x = [self.convs[i](f) for i, f in enumerate(self.reassemble_blocks(inputs))]
        out = self.fusion_blocks[0](x[-1])
        for i in range(1, 4):
            out = self.fusion_blocks[i](out, x[-(i + 1)])
        logit = self.conv_depth(self.project(out))
        bins = torch.linspace(0.001, 10, self.bins, device=inputs[0][0].device)
        logit = torch.relu(logit) + 0.1
        logit = logit / logit.sum(dim=1, keepdim=True)
        return torch.einsum("ikmn,k->imn", [logit, bins]).unsqueeze(dim=1)


class SSLAE(nn.Module):
    """Meta's model: ``backbone`` and ``decode_head``, the two prefixes of the published checkpoints."""

    def __init__(self, dim, depth, heads, out_indices, channels, features=256):
        super().__init__()
        self.backbone = Backbone(dim, depth, heads, out_indices)
        self.decode_head = DecodeHead(dim, channels, features)

    def forward(self, x):
        return self.decode_head(self.backbone(x))


def heights(model: SSLAE, rgb: torch.Tensor, mean, std) -> torch.Tensor:
    """Metres for RGB in [0, 1], as ``inference.py`` does it: normalise, run, times 10."""
    x = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return 10 * model(x)


def float_from_int8(quantised: nn.Module, like: SSLAE) -> SSLAE:
    """``like`` with the int8 weights of ``quantised`` (a dynamically quantised copy of it) put back as floats.

    What a float conversion of a compressed file must compute: the int8 weights' values, with float activations.
    """
    layers = dict(quantised.named_modules())
    with torch.no_grad():
        for name, module in like.named_modules():
            packed = layers.get(name)
            if isinstance(module, nn.Linear) and packed is not None and callable(getattr(packed, "weight", None)):
                module.weight.copy_(packed.weight().dequantize())
                module.bias.copy_(packed.bias())
    return like
