"""Real cloud layers: what a real Sentinel-2 cloud does to the ground, learnt from cloudy/clear pairs.

For a cloudy date ``Y`` and a clear date ``X`` of one place (linear display values, i.e. reflectance x gain, so
a thick cloud may exceed 1), each pixel is modelled as

    Y = (X * s + P * (1 - s)) * t + A * (1 - t)

* ``t`` (H,W) the cloud's transmission: 1 clear, 0 opaque (thick cumulus cores), in between for haze and the
  soft edges of thick clouds. Estimated per pixel by least squares over the bands, ``t = <Y-A, X-A> / |X-A|^2``.
* ``A`` (C,) the airlight, the colour of the cloud body: a high quantile of the cloudy date where it is
  much brighter than the clear one (bluish white; in linear units often 2-3, i.e. saturated once displayed).
* ``s`` (H,W) shadow darkening in (0, 1] where the cloudy date is darker than the clear, and ``P`` (C,) what a
  shadow keeps: the atmosphere's path radiance and blue sky light, which the cloud does not block. Real shadows
  are therefore bluish, not grey (red keeps ~45 % of the clear value, blue ~80 %). Over the shadow pixels, ``s``
  is the per-pixel least-squares ratio given ``P``, and ``P`` minimises the residual left after it.

The two dates also differ by real ground change and illumination, which leaks into ``t`` and ``s`` as texture;
small changes are snapped back to "clear" and both maps are smoothed a little, so a layer carries the cloud and
not the ground it was measured over. :func:`reproduce` puts a layer back on its own clear date: the PSNR against
the real cloudy date says how well the model explains the pair (notebook 01 shows both side by side).

A :class:`CloudBank` holds the layers of the training pairs and composites them, randomly cropped, turned and
thinned or thickened, onto any clear background, beside the procedural clouds of :mod:`cloudrm.synth`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import minimize

from . import io, metrics
from .dates import white_mask

#: Where the linear (reflectance x gain) value of a default cloud body lies when a pair has no thick cloud.
DEFAULT_AIRLIGHT = np.array([2.4, 2.45, 2.6], np.float32)
#: What a shadow keeps (linear units) when a pair has too few shadow pixels to fit it: a typical value. The 34
#: SEN12MS-CR pairs with enough shadow fit a median of (0.075, 0.15, 0.29), ranges R 0-0.25, G 0.04-0.31,
#: B 0.08-0.42; synth draws procedural shadows over the central part of those ranges.
DEFAULT_SHADOW_PATH = np.array([0.065, 0.14, 0.24], np.float32)


#: A real pair teaches cloud removal only if its clear date shows the ground the cloudy date shows. Where the
#: clear date is white (snow, or a cloud of its own) over ground the cloudy date shows darker, the difference is
#: the ground's, not a cloud's: learnt from, it makes a model paint white over dark ground, and its fitted layer
#: is a "shadow" over the whole frame. Pairs with more than this fraction of such pixels are left out of training
#: and of the bank. In SEN12MS-CR: the three ROIs1158_spring_26 pairs (snow fell between the dates: 96-100 %);
#: every other pair is at most 0.3 %, RICE at most 0.5 %.
MAX_WHITENED = 0.2


def whitened(cloudy: np.ndarray, clear: np.ndarray) -> float:
    """Fraction of pixels white on the clear date but not on the cloudy one (both display (C,H,W) in [0, 1])."""
    white = white_mask(np.stack([cloudy, clear]))
    return float((white[1] & ~white[0]).mean())


def teaches_removal(cloudy: np.ndarray, clear: np.ndarray) -> bool:
    """Whether a real (cloudy, clear) display pair may be learnt from: :data:`MAX_WHITENED` (above)."""
    return whitened(cloudy, clear) <= MAX_WHITENED


@dataclass
class CloudLayer:
    """One real cloud layer (see module doc). Maps are float16 to keep a bank small."""

    name: str
    transmission: np.ndarray   # (H, W) t in [0, 1]
    shade: np.ndarray          # (H, W) s in (0, 1]
    airlight: np.ndarray       # (C,) linear display units
    shadow_path: np.ndarray = field(default_factory=lambda: DEFAULT_SHADOW_PATH.copy())  # (C,) P, linear
    fit_psnr: float = float("nan")

    @property
    def cover(self) -> float:
        """Fraction of pixels the layer degrades noticeably (t < 0.9 or s < 0.9)."""
        return float(((self.transmission < 0.9) | (self.shade < 0.9)).mean())

    @property
    def shadow_cover(self) -> float:
        """Fraction of pixels in shadow (s < 0.9)."""
        return float((self.shade < 0.9).mean())


def linear(raster: io.Raster) -> np.ndarray:
    """A raster's linear display values (reflectance x gain; pictures as they are), RGB, float32."""
    r = io.to_rgb(raster) if raster.data.shape[0] != 3 else raster
    out = (r.data * r.gain).astype(np.float32)
    out[:, ~r.valid] = 0.0
    return out


def apply(clear: np.ndarray, t: np.ndarray, s: np.ndarray, airlight: np.ndarray,
          shadow_path: np.ndarray | None = None) -> np.ndarray:
    """``(clear * s + P * (1 - s)) * t + A * (1 - t)`` on linear (C,H,W) values (P defaults to
    :data:`DEFAULT_SHADOW_PATH`)."""
    c = clear.shape[0]
    p = io.band_colour(DEFAULT_SHADOW_PATH if shadow_path is None else shadow_path, c)[:, None, None]
    shaded = clear * s[None] + p * (1 - s)[None]
    return shaded * t[None] + io.band_colour(airlight, c)[:, None, None] * (1 - t)[None]


def _fit_shadow(y: np.ndarray, x: np.ndarray, fit_path: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``y = x * s + P * (1 - s)`` over shadow pixels (C,K): per-pixel s (K,) and one P (C,).
    s has a closed form given P, so P is found by minimising the residual left after it (variable
    projection); ``fit_path=False`` keeps :data:`DEFAULT_SHADOW_PATH` (too few pixels to fit it)."""
    p = DEFAULT_SHADOW_PATH[:y.shape[0]].astype(np.float64)
    if fit_path:
        def residual(q: np.ndarray) -> float:
            s = _shadow_given_path(y, x, q)
            return float(((x * s + q[:, None] * (1 - s) - y) ** 2).mean())
        p = minimize(residual, p, method="L-BFGS-B", bounds=[(0.0, 0.5)] * len(p)).x
    return _shadow_given_path(y, x, p), p


def _shadow_given_path(y: np.ndarray, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    xp, yp = x - p[:, None], y - p[:, None]
    return np.clip((xp * yp).sum(0) / np.maximum((xp * xp).sum(0), 1e-6), 0.05, 1.0)


def estimate(cloudy: np.ndarray, clear: np.ndarray, mask: np.ndarray | None = None, name: str = "",
             smooth: float = 1.0) -> CloudLayer:
    """The cloud layer that turns ``clear`` into ``cloudy`` (both linear (C,H,W)); ``mask`` (H,W) 0/1 where
    known says where clouds are (outside it, only shadows and haze thinner than the snap threshold remain)."""
    y, x = cloudy.astype(np.float64), clear.astype(np.float64)
    diff = (y - x).mean(0)
    bright = diff > 0.25                                      # much brighter than the ground: cloud body
    if bright.mean() > 0.002:
        a = np.quantile(y[:, bright], 0.98, axis=1)
        a = np.maximum(a, y[:, bright].mean(1))
    else:
        a = DEFAULT_AIRLIGHT[:y.shape[0]].astype(np.float64)
    a = np.maximum(a, 0.9)  # a cloud body is never darker than mid-grey
    xa, ya = x - a[:, None, None], y - a[:, None, None]
    t = (xa * ya).sum(0) / np.maximum((xa * xa).sum(0), 1e-6)
    t = np.clip(t, 0.0, 1.0)
    # shadows: darker than the clear date in every band, by more than ground change usually makes
    ratio = y.mean(0) / np.maximum(x.mean(0), 1e-3)
    darker = (y < x).all(0) & (ratio < 0.8)
    s = np.ones_like(t)
    s[darker], p = _fit_shadow(y[:, darker], x[:, darker], fit_path=darker.sum() >= 50)
    t = np.where(darker, 1.0, t)
    # snap small differences (ground change, illumination) back to clear, with a soft ramp
    t = np.where(t > 0.95, 1.0, np.where(t > 0.85, 0.85 + (t - 0.85) * 1.5, t))
    t = np.clip(t, 0, 1)
    if mask is not None:
        near = gaussian_filter(mask.astype(np.float64), 3.0) > 0.02  # the mask plus its soft edge
        t = np.where(near, t, np.maximum(t, 0.9))
    if smooth:
        t = gaussian_filter(t, smooth)
        s = gaussian_filter(s, smooth * 2)
    layer = CloudLayer(name, t.astype(np.float16), s.astype(np.float16), a.astype(np.float32), p.astype(np.float32))
    layer.fit_psnr = metrics.psnr(io.tone(cloudy), io.tone(apply(clear, t, s, a, p)), quantise=False)
    return layer


def reproduce(layer: CloudLayer, clear: np.ndarray) -> np.ndarray:
    """The layer applied to (linear) ``clear``: linear values."""
    return apply(clear, layer.transmission.astype(np.float32), layer.shade.astype(np.float32), layer.airlight,
                 layer.shadow_path)


def region(name: str) -> str:
    """The region of a SEN12MS-CR patch name (``ROIs1970_fall_136_p311`` -> ``ROIs1970_fall_136``); other names
    (the masked set's numeric ids) are their own region."""
    head, _, tail = name.rpartition("_p")
    return head if head and tail.isdigit() else name


def _read_rasters(folder: Path) -> tuple[io.Raster, io.Raster, np.ndarray | None]:
    cloudy = next(p for p in sorted(folder.glob("cloudy_*")) if p.suffix.lower() in io.IMAGE_EXTS)
    clear = next(p for p in sorted(folder.glob("clear.*")) if p.suffix.lower() in io.IMAGE_EXTS)
    mpath = next((p for p in sorted(folder.glob("mask.*")) if p.suffix.lower() in io.IMAGE_EXTS), None)
    mask = None if mpath is None else (io.read_image(mpath).data[0] > 0).astype(np.float32)
    return io.to_rgb(io.read_image(cloudy)), io.to_rgb(io.read_image(clear)), mask


def read_pair(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(cloudy, clear, mask or None) of a scene folder (``cloudy_0.*`` + ``clear.*`` [+ ``mask.*``]), linear RGB."""
    cloudy, clear, mask = _read_rasters(folder)
    return linear(cloudy), linear(clear), mask


class CloudBank:
    """Real cloud layers, composited onto clear backgrounds."""

    def __init__(self, layers: Sequence[CloudLayer]):
        self.layers = [lay for lay in layers if lay.cover > 0.01]
        # what shadow-only draws take: layers with a shadow over >= 2 % of their pixels (all layers if none has)
        self.shadowed = [lay for lay in self.layers if lay.shadow_cover >= 0.02] or self.layers

    def __len__(self) -> int:
        return len(self.layers)

    @classmethod
    def from_folders(cls, folders: Sequence[str | os.PathLike], keep=lambda name: True) -> "CloudBank":
        """Layers of every scene folder (``<ROOT>/<SCENE>/cloudy_0 + clear [+ mask]``) whose name ``keep``s and
        whose pair :func:`teaches_removal`."""
        layers = []
        for root in folders:
            root = Path(root)
            if not root.is_dir():
                continue
            for d in sorted(p for p in root.iterdir() if p.is_dir()):
                if not keep(d.name):
                    continue
                try:
                    cloudy, clear, mask = _read_rasters(d)
                except StopIteration:
                    continue
                if teaches_removal(io.to_display(cloudy), io.to_display(clear)):
                    layers.append(estimate(linear(cloudy), linear(clear), mask, name=d.name))
        return cls(layers)

    def sample(self, rng: np.random.Generator, h: int, w: int, shadowed: bool = False) -> tuple[np.ndarray, ...]:
        """A random layer, cropped/turned to (h, w) and thinned or thickened: (t, s, airlight, shadow path).
        ``shadowed``: only from :attr:`shadowed` layers."""
        pool = self.shadowed if shadowed else self.layers
        lay = pool[int(rng.integers(len(pool)))]
        t, s = lay.transmission.astype(np.float32), lay.shade.astype(np.float32)
        lh, lw = t.shape
        if lh < h or lw < w:  # a larger background: tile by reflection
            reps = (int(np.ceil(h / lh)), int(np.ceil(w / lw)))
            t = np.pad(t, ((0, reps[0] * lh - lh), (0, reps[1] * lw - lw)), mode="reflect")
            s = np.pad(s, ((0, reps[0] * lh - lh), (0, reps[1] * lw - lw)), mode="reflect")
            lh, lw = t.shape
        y, x = int(rng.integers(0, lh - h + 1)), int(rng.integers(0, lw - w + 1))
        t, s = t[y:y + h, x:x + w], s[y:y + h, x:x + w]
        k = int(rng.integers(0, 4))
        t, s = np.rot90(t, k), np.rot90(s, k)
        if rng.random() < 0.5:
            t, s = t[:, ::-1], s[:, ::-1]
        # thinner or thicker versions of the same cloud (optical depth scales: t -> t^g)
        g = float(np.exp(rng.uniform(np.log(0.6), np.log(1.8))))
        t = np.power(np.clip(t, 1e-4, 1.0), g)
        s = 1 - (1 - s) * rng.uniform(0.7, 1.2)
        a = lay.airlight * rng.uniform(0.92, 1.08) * (1 + rng.normal(0, 0.015, size=lay.airlight.shape))
        p = lay.shadow_path * rng.uniform(0.85, 1.15)
        return (np.ascontiguousarray(t), np.ascontiguousarray(np.clip(s, 0.05, 1.0)), a.astype(np.float32),
                p.astype(np.float32))

    def composite(self, clear_linear: np.ndarray, rng: np.random.Generator,
                  shadow_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A real cloud layer over a linear (C,H,W) background: (cloudy linear, degradation mask (H,W)).
        ``shadow_only``: the layer's shadow without its cloud (the cloud beyond the frame)."""
        c, h, w = clear_linear.shape
        t, s, a, p = self.sample(rng, h, w, shadowed=shadow_only)
        if shadow_only:
            t = np.ones_like(t)
        if c > a.shape[0]:
            a = np.concatenate([a, np.full(c - a.shape[0], a.mean(), np.float32)])
        out = apply(clear_linear, t, s, a, p)
        return out.astype(np.float32), np.clip(1 - t * s, 0, 1).astype(np.float32)
