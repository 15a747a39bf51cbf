"""DiffCR's denoiser: a NAFNet-style U-Net that predicts x0, with a decoupled condition encoder.

    cond_feats = ConditionEncoder(dates)            # once per image: never sees y_t or the noise level
    x0_hat     = Denoiser(y_t, alpha_bar, cond_feats) # every sampler step

* Condition encoder: its own stem and NAF blocks; the dates share its weights (folded into the batch) and
  their features are fused per level by a weighted mean over the valid dates. ``fusion="mean"``: equal
  weights. ``fusion="gated"`` (beyond the paper): a 3x3 conv per level scores each date's features, and a
  softmax over the dates turns the scores into per-pixel weights, so the network can take each pixel from
  the date where it is clear instead of averaging a cloud into it. Its convs start at zero, i.e. exactly the
  mean, so gated weights fine-tune from mean ones. Either mean (not the paper's sum) keeps the feature scale
  the same for 1, 2 or 3 dates, so one set of weights serves RICE (one date) and Sentinel-2 stacks (three);
  training draws a random number of dates so each count is actually seen.
* Denoiser encoder level i: TCF blocks, then ``+ cond_i`` before the skip and the 2x2 stride-2 downsampling.
  Decoder: 1x1 conv + PixelShuffle(2) up, skip ADDED, TCF blocks. Last conv outputs x0.
* Time: sinusoidal embedding of the continuous alpha_bar (x1000) -> MLP -> per-channel bias in every TCF block.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .blocks import LayerNorm2d, SimpleGate, pad_to_multiple


def level_embedding(level: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of a continuous noise level in (0, 1)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    args = level.float()[:, None] * scale * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class TCFBlock(nn.Module):
    """Time and condition fusion block (NAFNet block + time bias + split channel attention).

    Spatial branch: LN -> 1x1 (c->2c) -> depthwise 3x3 -> SimpleGate -> + time bias -> split channel attention
    (half: avg-pool + 1x1; half: max-pool + 1x1) -> 1x1, residual x beta (init 0).
    FFN: LN -> 1x1 (c->2c) -> SimpleGate -> 1x1, residual x gamma (init 0).
    ``time_dim=0`` gives the plain NAF block of the condition encoder.
    """

    def __init__(self, c: int, time_dim: int = 0):
        super().__init__()
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.gate = SimpleGate()
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, c)) if time_dim else None
        h = c // 2
        self.sca_avg = nn.Conv2d(h, h, 1)
        self.sca_max = nn.Conv2d(c - h, c - h, 1)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.ffn1 = nn.Conv2d(c, 2 * c, 1)
        self.ffn2 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        y = self.gate(self.dw(self.conv1(self.norm1(x))))
        if self.time is not None and temb is not None:
            y = y + self.time(temb)[:, :, None, None]
        h = y.shape[1] // 2
        a, m = y[:, :h], y[:, h:]
        a = a * self.sca_avg(a.mean((2, 3), keepdim=True))
        m = m * self.sca_max(m.amax((2, 3), keepdim=True))
        x = x + self.beta * self.conv2(torch.cat([a, m], 1))
        y = self.ffn2(self.gate(self.ffn1(self.norm2(x))))
        return x + self.gamma * y


class DiffCRUNet(ModelMixin, ConfigMixin):
    """``encode_condition(dates, n_dates)`` once, then ``forward(y_t, alpha_bar, cond)`` per step.

    Shapes: dates (B, N, C, H, W) in [-1, 1]; y_t (B, C, H, W); alpha_bar (B,). H and W must be multiples of
    ``2 ** len(enc_blocks)`` (the method pads).
    """

    #: parameters that may start at their zero initialisation when fine-tuning weights that lack them
    init_new_keys = ("cond_gate.",)

    @register_to_config
    def __init__(self, in_channels: int = 3, width: int = 16, enc_blocks: tuple[int, ...] = (1, 1, 1, 1),
                 middle_blocks: int = 1, dec_blocks: tuple[int, ...] = (1, 1, 1, 1),
                 cond_blocks: tuple[int, ...] = (1, 1, 1, 1), time_in: int = 64, time_dim: int = 256,
                 fusion: str = "mean"):
        super().__init__()
        if fusion not in ("mean", "gated"):
            raise ValueError(f"fusion must be 'mean' or 'gated', not {fusion!r}")
        n = len(enc_blocks)
        chans = [width * 2 ** i for i in range(n + 1)]
        self.time_mlp = nn.Sequential(nn.Linear(time_in, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # condition encoder (no time input)
        self.cond_stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.cond_levels = nn.ModuleList(nn.Sequential(*[TCFBlock(chans[i]) for _ in range(cond_blocks[i])])
                                         for i in range(n))
        self.cond_down = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 2, stride=2) for i in range(n - 1))
        if fusion == "gated":
            self.cond_gate = nn.ModuleList(nn.Conv2d(chans[i], 1, 3, padding=1) for i in range(n))
            for g in self.cond_gate:
                nn.init.zeros_(g.weight)
                nn.init.zeros_(g.bias)
        # denoiser
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.enc = nn.ModuleList(nn.ModuleList(TCFBlock(chans[i], time_dim) for _ in range(enc_blocks[i])) for i in range(n))
        self.down = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 2, stride=2) for i in range(n))
        self.middle = nn.ModuleList(TCFBlock(chans[n], time_dim) for _ in range(middle_blocks))
        self.up = nn.ModuleList(nn.Sequential(nn.Conv2d(chans[i + 1], chans[i] * 4, 1, bias=False), nn.PixelShuffle(2))
                                for i in reversed(range(n)))
        self.dec = nn.ModuleList(nn.ModuleList(TCFBlock(chans[i], time_dim) for _ in range(dec_blocks[i]))
                                 for i in reversed(range(n)))
        self.out = nn.Conv2d(width, in_channels, 3, padding=1)
        self.multiple = 2 ** n

    def encode_condition(self, dates: torch.Tensor, n_dates: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-level condition features, fused over the valid dates (see ``fusion``). dates (B, N, C, H, W)."""
        b, n = dates.shape[:2]
        if n_dates is None:
            n_dates = torch.full((b,), n, device=dates.device)
        n_dates = n_dates.to(dates.device).long()
        # encode only the dates that exist (training pads to 3), then fuse them per image
        valid = (torch.arange(n, device=dates.device)[None] < n_dates[:, None]).flatten()
        f = self.cond_stem(dates.flatten(0, 1)[valid])
        feats = []
        for i, level in enumerate(self.cond_levels):
            f = level(f)
            feats.append(self._fuse(f, i, valid, b, n))
            if i < len(self.cond_down):
                f = self.cond_down[i](f)
        return feats

    def _fuse(self, f: torch.Tensor, level: int, valid: torch.Tensor, b: int, n: int) -> torch.Tensor:
        """(V, C, h, w) features of the V valid dates -> (B, C, h, w): their softmax-weighted (gated) or plain mean."""
        full = f.new_zeros((b * n,) + f.shape[1:])
        full[valid] = f
        score = f.new_full((b * n, 1) + f.shape[2:], float("-inf"))
        score[valid] = self.cond_gate[level](f) if self.config.fusion == "gated" else 0.0
        weight = torch.softmax(score.unflatten(0, (b, n)), dim=1)
        return (full.unflatten(0, (b, n)) * weight).sum(1)

    def forward(self, y_t: torch.Tensor, alpha_bar: torch.Tensor, cond: list[torch.Tensor] | None = None,
                dates: torch.Tensor | None = None, n_dates: torch.Tensor | None = None) -> torch.Tensor:
        """x0 estimate. Pass ``cond`` (precomputed, sampling) or ``dates`` (training, one call for DDP)."""
        if cond is None:
            cond = self.encode_condition(dates, n_dates)
        temb = self.time_mlp(level_embedding(alpha_bar.expand(y_t.shape[0]), self.config.time_in).to(y_t.dtype))
        x = self.stem(y_t)
        skips = []
        for blocks, down, c in zip(self.enc, self.down, cond):
            for blk in blocks:
                x = blk(x, temb)
            x = x + c
            skips.append(x)
            x = down(x)
        for blk in self.middle:
            x = blk(x, temb)
        for up, blocks, skip in zip(self.up, self.dec, reversed(skips)):
            x = up(x) + skip
            for blk in blocks:
                x = blk(x, temb)
        return self.out(x)

    def predict_x0(self, y_t: torch.Tensor, alpha_bar: torch.Tensor, dates: torch.Tensor,
                   n_dates: torch.Tensor | None = None) -> torch.Tensor:
        """Training convenience: condition + denoise in one call (pads to the U-Net multiple)."""
        yp, (h, w) = pad_to_multiple(y_t, self.multiple)
        dp, _ = pad_to_multiple(dates.flatten(0, 1), self.multiple)
        cond = self.encode_condition(dp.unflatten(0, dates.shape[:2]), n_dates)
        return self(yp, alpha_bar, cond)[..., :h, :w]
