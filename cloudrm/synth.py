"""Synthetic clouds over clear images: thin haze, thick clouds, cloud shadows and multi-date stacks.

Real multi-date Sentinel-2 training data is not available, so DiffCR learns from clear images with clouds
drawn here; their realism decides how well it transfers to real scenes. What the real Sen2_MTC scenes show,
and what this generator imitates:

* thick cumulus: opaque, saturated near-white cores (clipped in true colour), soft fractal edges, a slight
  blue-grey shading inside; coverage from a few % to a whole tile, independently per date;
* thin cloud / haze and cirrus: spatially varying transmission, often streaky (anisotropic), with a
  bluish-white airlight, so the ground shows through with lower contrast;
* shadows: the cloud mask shifted by the sun direction (one offset per date), blurred, darkening the ground
  by 45-85 % towards what a shadow keeps (path radiance and sky light, bluish: real shadows keep ~45 % of red
  and ~80 % of blue); they fall where there is no cloud;
* between dates: small gain/offset changes (phenology, illumination) of the clear ground.

Everything is seeded (``numpy.random.Generator``) and returns the cloudy images plus masks in [0, 1].
Images are (C, H, W) float32 in display space [0, 1] (see :mod:`cloudrm.io`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.ndimage import gaussian_filter, shift as nd_shift

from . import io


@dataclass(frozen=True)
class CloudConfig:
    """Probabilities and ranges of the generator (defaults tuned by eye on Sen2_MTC figure scenes)."""

    p_thick: float = 0.8        # a date gets thick clouds
    p_haze: float = 0.55        # a date gets thin haze / cirrus
    p_shadow: float = 0.75      # thick clouds cast a shadow
    coverage: tuple[float, float] = (0.05, 0.95)
    haze_strength: tuple[float, float] = (0.25, 0.95)
    shadow_darkness: tuple[float, float] = (0.45, 0.85)
    max_shadow_offset: float = 0.15   # of the image side
    date_gain: float = 0.06           # +- relative change of the clear ground between dates
    p_all_dates: float = 0.0          # a stack has clouds over >= 15 % of every date (real cloudy series)
    p_clear: float = 0.0              # a stack has no cloud at all: what to leave as it is
    p_shadow_only: float = 0.0        # a date's shadow falls in the frame, its cloud outside (a tile's edge)
    # such a shadow must leave ground in the frame to compare with: one over nearly all of it is only darker
    # ground, which teaches nothing (a model cannot tell it from a darker field, so it learns to leave it)
    shadow_only_coverage: tuple[float, float] = (0.1, 0.4)

    @classmethod
    def from_options(cls, options: dict | None) -> "CloudConfig":
        """A training config's ``data.clouds`` (field -> value; ranges as 2-item lists) over the defaults."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options or {}) - names)
        if unknown:
            raise ValueError(f"unknown cloud option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()})


def fractal_noise(rng: np.random.Generator, h: int, w: int, beta: float = 2.2,
                  anisotropy: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Power-law (1/f^beta) noise, zero mean, unit std. ``anisotropy`` > 1 stretches it into streaks."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    c, s = np.cos(angle), np.sin(angle)
    u = fx * c + fy * s
    v = (-fx * s + fy * c) * anisotropy
    f = np.sqrt(u * u + v * v)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    phase = rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))
    n = np.fft.irfft2(amp * phase, s=(h, w))
    n -= n.mean()
    return (n / (n.std() + 1e-8)).astype(np.float32)


def _threshold_for_coverage(noise: np.ndarray, coverage: float) -> float:
    return float(np.quantile(noise, 1.0 - coverage))


def thick_cloud_alpha(rng: np.random.Generator, h: int, w: int, coverage: float) -> np.ndarray:
    """Opacity of thick clouds: opaque cores, soft fractal edges."""
    # billowy cumulus: a smooth large-scale field plus a little fine detail on the edges
    n = fractal_noise(rng, h, w, beta=rng.uniform(3.4, 4.4)) + 0.15 * fractal_noise(rng, h, w, beta=2.0)
    thr = _threshold_for_coverage(n, coverage)
    softness = rng.uniform(0.25, 0.9)
    a = np.clip((n - thr) / softness, 0.0, 1.0)
    # smooth the ramp (smoothstep) and let the cores saturate
    a = a * a * (3 - 2 * a)
    return a.astype(np.float32)


def haze_transmission(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """1 - haze density: 1 = clear, lower = more veiled. Half the time streaky, like cirrus."""
    streaky = rng.random() < 0.5
    n = fractal_noise(rng, h, w, beta=rng.uniform(2.5, 3.5),
                      anisotropy=rng.uniform(3, 8) if streaky else 1.0, angle=rng.uniform(0, np.pi))
    d = np.clip(0.5 + 0.35 * n, 0, 1) * strength
    return (1.0 - d).astype(np.float32)


def shadow_path(rng: np.random.Generator, c: int) -> np.ndarray:
    """(c,) what a shadow keeps, drawn over the central part of the range fitted on real SEN12MS-CR shadows
    (see :data:`cloudrm.cloudbank.DEFAULT_SHADOW_PATH`); extra bands (NIR) take the red value."""
    return io.band_colour([rng.uniform(0.0, 0.12), rng.uniform(0.11, 0.19), rng.uniform(0.18, 0.32)], c)


def add_clouds(clear: np.ndarray, rng: np.random.Generator, cfg: CloudConfig = CloudConfig(),
               coverage: float | None = None, shadow_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cloud one (C,H,W) image in [0,1]. Returns (cloudy, mask) with mask (H,W) in [0,1]: how much each pixel
    is degraded (cloud opacity, haze density or shadow darkening, whichever is largest). ``shadow_only``: the
    thick clouds stay outside the frame and only their shadow (always cast) falls in it."""
    c, h, w = clear.shape
    out = clear.astype(np.float32).copy()
    mask = np.zeros((h, w), np.float32)
    if not shadow_only and rng.random() < cfg.p_haze:  # a shadow-only date is the shadow alone
        t = haze_transmission(rng, h, w, rng.uniform(*cfg.haze_strength))
        air = np.clip(rng.uniform(0.78, 0.95) + rng.normal(0, 0.02, size=3) + np.array([-0.02, 0.0, 0.03]), 0, 1)
        air = air[:c] if c <= 3 else np.concatenate([air, np.full(c - 3, air.mean())])
        out = out * t + air[:, None, None].astype(np.float32) * (1 - t)
        mask = np.maximum(mask, 1 - t)
    if shadow_only or rng.random() < cfg.p_thick:
        cov = coverage if coverage is not None else rng.uniform(
            *(cfg.shadow_only_coverage if shadow_only else cfg.coverage))
        a = thick_cloud_alpha(rng, h, w, cov)
        if shadow_only or rng.random() < cfg.p_shadow:
            dy, dx = rng.uniform(-1, 1, size=2) * cfg.max_shadow_offset * np.array([h, w])
            sh = nd_shift(a, (dy, dx), order=1, mode="constant", cval=0.0)
            sh = gaussian_filter(sh, sigma=rng.uniform(1.0, 4.0))
            dark = rng.uniform(*cfg.shadow_darkness)
            if shadow_only:  # the cloud that casts it is beyond the frame: nothing hides the shadow
                a = np.zeros_like(a)
            shade = 1 - dark * sh * (1 - a)                       # no shadow under the cloud itself
            # a shadow keeps the path radiance and blue sky light: bluish, not grey (cloudbank's P)
            path = shadow_path(rng, c)
            out = out * shade[None] + path[:, None, None] * (1 - shade)[None]
            mask = np.maximum(mask, dark * sh * (1 - a))
        if shadow_only:
            return np.clip(out, 0, 1).astype(np.float32), np.clip(mask, 0, 1)
        # cloud body: near-white, slightly blue-grey shaded, brighter towards the core
        shading = np.clip(0.88 + 0.08 * fractal_noise(rng, h, w, beta=3.0) + 0.22 * a, 0.65, 1.15)
        body = np.stack([shading * k for k in (0.97, 0.99, 1.02)] + [shading] * max(c - 3, 0))[:c]
        out = out * (1 - a[None]) + np.clip(body, 0, 1) * a[None]
        mask = np.maximum(mask, a)
    return np.clip(out, 0, 1).astype(np.float32), np.clip(mask, 0, 1)


def jitter_radiometry(clear: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Small per-channel gain/offset change of the clear ground between dates (values stay >= 0; linear
    reflectance units may exceed 1)."""
    c = clear.shape[0]
    gain = 1 + rng.uniform(-amount, amount) + rng.normal(0, amount / 3, size=c)
    offset = rng.normal(0, amount / 4, size=c)
    return np.maximum(clear * gain[:, None, None] + offset[:, None, None], 0).astype(np.float32)


def date_change(clear: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """The same ground on another date: illumination (gain/offset), phenology (a smooth, spatially varying
    per-channel gain: fields green up or dry out unevenly) and a small misregistration (up to 0.7 px)."""
    c, h, w = clear.shape
    out = jitter_radiometry(clear, rng, amount)
    if rng.random() < 0.6:
        field = np.stack([fractal_noise(rng, h, w, beta=4.0) for _ in range(min(c, 2))])
        per_band = field[np.minimum(np.arange(c), field.shape[0] - 1)]
        out = out * (1 + amount * 0.8 * per_band)
    if rng.random() < 0.5:
        dy, dx = rng.uniform(-0.7, 0.7, size=2)
        out = nd_shift(out, (0, dy, dx), order=1, mode="nearest")
    return np.maximum(out, 0).astype(np.float32)


def multi_temporal(clear: np.ndarray, n_dates: int, rng: np.random.Generator,
                   cfg: CloudConfig = CloudConfig(), bank=None, p_bank: float = 0.0,
                   to_display=None) -> tuple[np.ndarray, np.ndarray]:
    """``n_dates`` cloudy acquisitions of one clear image: (N,C,H,W) display images and (N,H,W) masks.

    ``clear`` is in linear units (pictures: display values; reflectance: reflectance x gain) and
    ``to_display`` maps linear units to display [0, 1] (default: clip). Each date gets its own clouds --
    a real layer from ``bank`` (a :class:`cloudrm.cloudbank.CloudBank`) with probability ``p_bank``, else
    procedural ones -- and, with several dates, its own ground change (:func:`date_change`). The target
    stays ``clear``. At least one date has clouds so no date is a free copy of the target, except in the
    cloud-free stacks ``cfg.p_clear`` asks for: without them a model never sees clear ground as input, and it
    learns to change whatever it is given (dark ground brightened as if shadowed, a hazy cast on clear dates).
    """
    to_display = to_display or (lambda a: np.clip(a, 0.0, 1.0))
    if cfg.p_clear > 0 and rng.random() < cfg.p_clear:  # drawn only when enabled, as below
        grounds = [date_change(clear, rng, cfg.date_gain) if n_dates > 1 else clear for _ in range(n_dates)]
        return (np.stack([to_display(g).astype(np.float32) for g in grounds]),
                np.zeros((n_dates,) + clear.shape[1:], np.float32))
    # drawn only when enabled, so configs without it keep their random stream
    all_cloudy = n_dates > 1 and cfg.p_all_dates > 0 and rng.random() < cfg.p_all_dates
    dates, masks = [], []
    for i in range(n_dates):
        ground = date_change(clear, rng, cfg.date_gain) if n_dates > 1 else clear
        # drawn only when enabled, as above
        shadow_only = cfg.p_shadow_only > 0 and rng.random() < cfg.p_shadow_only
        if bank is not None and len(bank) and rng.random() < p_bank:
            lin, m = bank.composite(ground, rng, shadow_only=shadow_only)
            cloudy = to_display(lin)
        else:
            cloudy, m = add_clouds(to_display(ground), rng, cfg, shadow_only=shadow_only)
        if i == 0 and m.max() < 0.05:  # make sure the stack is not cloud-free (a shadow-only one: not shadow-free)
            cover = None if shadow_only else rng.uniform(0.2, 0.7)
            cloudy, m = add_clouds(to_display(ground), rng, cfg, coverage=cover, shadow_only=shadow_only)
        elif all_cloudy and m.mean() < 0.15:  # more clouds over this date's (light) layer
            cloudy, m2 = add_clouds(cloudy, rng, cfg, coverage=rng.uniform(0.2, 0.7))
            m = np.maximum(m, m2)
        dates.append(cloudy.astype(np.float32))
        masks.append(m)
    return np.stack(dates), np.stack(masks)


def demo_scene(seed: int, size: int = 256, channels: int = 3) -> np.ndarray:
    """A clear, landscape-like image made from noise (fields, a river, roads), for built-in samples."""
    rng = np.random.default_rng(seed)
    h = w = size
    base = fractal_noise(rng, h, w, beta=3.0)
    fields = np.floor((fractal_noise(rng, h, w, beta=3.5) + 3) * 2.5) / 15.0
    palette = np.array([[0.22, 0.30, 0.16], [0.40, 0.38, 0.28], [0.30, 0.42, 0.20], [0.50, 0.45, 0.35]])
    idx = np.clip(((base + 2.5) / 5 * len(palette)).astype(int), 0, len(palette) - 1)
    img = palette[idx].transpose(2, 0, 1) * (0.85 + 0.3 * fields[None])
    img += 0.04 * fractal_noise(rng, h, w, beta=1.2)[None]
    yy, xx = np.mgrid[0:h, 0:w] / size
    river = np.abs(yy - 0.5 - 0.2 * np.sin(xx * rng.uniform(4, 8) + rng.uniform(0, 6))) < 0.025
    img[:, river] = np.array([0.10, 0.16, 0.22])[:, None]
    for _ in range(2):
        a, b = rng.uniform(-1, 1), rng.uniform(0.2, 0.8)
        road = np.abs(yy - (a * xx + b)) < 0.006
        img[:, road] = 0.75
    img = np.clip(img, 0, 1).astype(np.float32)
    if channels == 4:
        nir = np.clip(0.25 + 0.6 * img[1] - 0.2 * img[0], 0, 1)
        img = np.concatenate([img, nir[None]])
    return img
