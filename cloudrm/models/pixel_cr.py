"""Pixel-CR, stage 1 of IDF-CR: Swin transformer stages, each followed by a cloudy-attention module.

    F_0 = stem(x)
    F_i = A_i * ST_i(F_{i-1}) + ST_i(F_{i-1}),   A_i = CA_i(ST_i(F_{i-1})) in [0, 1]   (a 1-channel cloud map)
    (last stage: a conv between ST_N and the product)
    y   = x + recon(F_N)                          (2 convs)

CPU-minded deviation from the paper (which runs 96-channel Swin at full 512 px resolution): the conv stem
reduces the resolution by ``2 ** len(stem_dims)`` with strided convs, the Swin stages run there, and a
mirror of the stem (pixel-shuffle + skip) brings the features back before the 2-conv reconstruction, plus a
global residual. Window attention at full resolution costs ~16x more and does not fit the 0.5 s budget.
The cloudy attention is the paper's "convolution-based spatial attention module" (dilated convs + sigmoid).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .blocks import pad_to_multiple


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(x: torch.Tensor, w: int, b: int, h: int, wd: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with Swin's relative position bias."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("rel_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias_table[self.rel_index.reshape(-1)].view(n, n, self.heads).permute(2, 0, 1)
        if mask is not None:  # (nW, n, n): -inf between pixels that were not neighbours before the shift
            nw = mask.shape[0]
            bias = (bias[None] + mask[:, None]).unsqueeze(0).expand(bw // nw, -1, -1, -1, -1)
            bias = bias.reshape(bw, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _mask(self, h: int, w: int, device) -> torch.Tensor | None:
        if not self.shift:
            return None
        img = torch.zeros(1, h, w, 1, device=device)
        cnt = 0
        for hs in (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None)):
            for ws in (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None)):
                img[:, hs, ws, :] = cnt
                cnt += 1
        win = window_partition(img, self.window).squeeze(-1)
        diff = win[:, None, :] - win[:, :, None]
        return torch.zeros_like(diff).masked_fill(diff != 0, float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self._mask(h, w, x.device))
        y = window_reverse(y, self.window, b, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class CloudyAttention(nn.Module):
    """Convolutional spatial attention: features -> one cloud map in [0, 1] (growing receptive field)."""

    def __init__(self, dim: int):
        super().__init__()
        mid = max(dim // 2, 8)
        self.net = nn.Sequential(
            nn.Conv2d(dim, mid, 3, padding=1), nn.GELU(),
            nn.Conv2d(mid, mid, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv2d(mid, mid, 3, padding=4, dilation=4), nn.GELU(),
            nn.Conv2d(mid, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


class CRStage(nn.Module):
    """One H_CR_i: Swin layer (``depth`` blocks, alternating shifts), then cloudy attention."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, last: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1) if last else None
        self.attention = CloudyAttention(dim)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, C, H, W)
        x = f.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        st = x.permute(0, 3, 1, 2)
        if self.conv is not None:
            st = self.conv(st)
        a = self.attention(st)
        return a * st + st, a


class PixelCR(ModelMixin, ConfigMixin):
    """Pixel-space cloud removal. ``forward(x)`` -> (image, attention maps); images in [0, 1]."""

    @register_to_config
    def __init__(self, in_channels: int = 3, dim: int = 64, stem_dims: tuple[int, ...] = (24, 48),
                 depths: tuple[int, ...] = (2, 2, 2), heads: int = 4, window: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        dims = list(stem_dims) + [dim]
        self.stem = nn.Conv2d(in_channels, dims[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 4, stride=2, padding=1), nn.GELU(),
                          nn.Conv2d(dims[i + 1], dims[i + 1], 3, padding=1))
            for i in range(len(stem_dims)))
        self.stages = nn.ModuleList(
            CRStage(dim, d, heads, window, mlp_ratio, last=(i == len(depths) - 1)) for i, d in enumerate(depths))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i + 1], dims[i] * 4, 1), nn.PixelShuffle(2))
            for i in reversed(range(len(stem_dims))))
        self.up_conv = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i], 3, padding=1), nn.GELU())
            for i in reversed(range(len(stem_dims))))
        self.recon = nn.Sequential(nn.Conv2d(dims[0], dims[0], 3, padding=1), nn.GELU(),
                                   nn.Conv2d(dims[0], in_channels, 3, padding=1))
        self.multiple = window * 2 ** len(stem_dims)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B,C,H,W) in [0,1], any size -> (output (B,C,H,W), attention maps per stage at 1/2^k size)."""
        xp, (h, w) = pad_to_multiple(x, self.multiple)
        f = self.stem(xp * 2 - 1)
        skips = []
        for down in self.down:
            skips.append(f)
            f = down(f)
        maps = []
        for stage in self.stages:
            f, a = stage(f)
            maps.append(a)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            f = conv(up(f) + skip)
        out = xp + self.recon(f)
        return out[..., :h, :w], maps

    @staticmethod
    def cloud_map(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The last stage's attention, upsampled to the image size: the cloud map shown to users."""
        a = maps[-1]
        scale = math.ceil(size[0] / a.shape[-2])
        a = F.interpolate(a, scale_factor=scale, mode="bilinear", align_corners=False)
        return a[..., : size[0], : size[1]].clamp(0, 1)
