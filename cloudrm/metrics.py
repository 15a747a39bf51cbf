"""The one metrics module: pure functions on numpy images.

Convention (all reference metrics, every table in the README): RGB (C,H,W) float in [0, 1]; the *output* is
quantised to uint8 first (what a PNG holds); data range 1; no border crop; computed per image, then averaged.
SSIM is skimage's Gaussian-window SSIM (sigma 1.5, population covariance), which matches basicsr/MATLAB.

No-reference NIQE and BRISQUE come from :mod:`cloudrm.nr_iqa` (numpy ports of the LIVE MATLAB releases with
their standard parameter files). LPIPS/FID need backbone weights that cannot be obtained offline here; they
are reported as ``None`` ("unavailable"), never approximated.
"""
from __future__ import annotations

import math

import numpy as np

from .io import as_rgb
from .nr_iqa import brisque as _brisque
from .nr_iqa import niqe as _niqe

#: PSNR of identical images (JSON has no infinity; no real output gets near it)
PSNR_CAP = 100.0


def _prep(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected a (C,H,W) image, got shape {x.shape}")
    return x


def as_uint8_float(x: np.ndarray) -> np.ndarray:
    """Quantise to the 256 levels a PNG stores, back in [0, 1] (float64)."""
    return np.round(np.clip(_prep(x), 0, 1) * 255) / 255


def _pair(ref: np.ndarray, out: np.ndarray, quantise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    ref, out = _prep(ref), (as_uint8_float(out) if quantise else np.clip(_prep(out), 0, 1))
    if ref.shape != out.shape:
        raise ValueError(f"reference {ref.shape} and output {out.shape} differ in shape")
    return np.clip(ref, 0, 1), out


def psnr(ref: np.ndarray, out: np.ndarray, quantise: bool = True) -> float:
    """PSNR in dB, data range 1 (skimage ``peak_signal_noise_ratio`` on the same arrays). The output is
    quantised to 8 bits first, as a saved PNG would be; ``quantise=False`` scores float arrays as they are
    (fits of a model, e.g. the cloud bank's layers)."""
    ref, out = _pair(ref, out, quantise)
    mse = float(np.mean((ref - out) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, float(10 * np.log10(1.0 / mse)))


def ssim(ref: np.ndarray, out: np.ndarray) -> float:
    """SSIM (Gaussian window sigma 1.5, data range 1), mean over channels."""
    from skimage.metrics import structural_similarity

    ref, out = _pair(ref, out)
    return float(structural_similarity(ref, out, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def rmse(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _pair(ref, out)
    return float(np.sqrt(np.mean((ref - out) ** 2)))


def sam(ref: np.ndarray, out: np.ndarray, eps: float = 1e-8) -> float:
    """Spectral angle mapper in degrees, mean over pixels (for multiband images)."""
    ref, out = _pair(ref, out)
    dot = (ref * out).sum(0)
    norm = np.linalg.norm(ref, axis=0) * np.linalg.norm(out, axis=0)
    ang = np.arccos(np.clip(dot / (norm + eps), -1, 1))
    return float(np.degrees(ang).mean())


def niqe(out: np.ndarray) -> float | None:
    """NIQE of the (uint8-quantised) output; lower is better. None when the image is too small."""
    try:
        return float(_niqe(np.round(np.clip(_prep(out), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)))
    except ValueError:
        return None


def brisque(out: np.ndarray) -> float | None:
    """BRISQUE of the (uint8-quantised) output; lower is better. None when the image is too small."""
    try:
        return float(_brisque(np.round(np.clip(_prep(out), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)))
    except ValueError:
        return None


def lpips(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Unavailable offline (its AlexNet/VGG backbone weights cannot be downloaded here): always None."""
    return None


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (used for uncertainty vs error)."""
    from scipy.stats import spearmanr

    r = spearmanr(np.ravel(a), np.ravel(b)).statistic
    return float(r) if np.isfinite(r) else 0.0


def magenta(image: np.ndarray, margin: float = 0.06) -> float:
    """Fraction of pixels with a magenta cast (R and B both above G by ``margin``) in an RGB (3,H,W) image."""
    r, g, b = image[:3]
    return float(((r - g > margin) & (b - g > margin)).mean())


def magenta_excess(out: np.ndarray, ref: np.ndarray) -> float:
    """Magenta-cast pixels of ``out`` beyond those of ``ref``: colours of neither the input nor the ground
    (the fill a model paints over saturated clouds it never learnt), as a fraction of the image."""
    return max(0.0, magenta(out) - magenta(ref))


def evaluate(out: np.ndarray, ref: np.ndarray | None = None, no_reference: bool = True) -> dict[str, float | None]:
    """Every metric the app and ``eval`` report for one image; ``None`` where not computable."""
    res: dict[str, float | None] = {"psnr": None, "ssim": None, "rmse": None}
    if ref is not None:
        res.update(psnr=psnr(ref, out), ssim=ssim(ref, out), rmse=rmse(ref, out))
    res["niqe"] = niqe(out) if no_reference else None
    res["brisque"] = brisque(out) if no_reference else None
    return res


def report(out: np.ndarray, ref: np.ndarray | None = None, seconds: float | None = None) -> dict[str, float | None]:
    """The app API's metrics dict: psnr, ssim, rmse (None without a reference), niqe, brisque (None when not
    computable) and seconds, on the output's RGB bands. Any non-finite value becomes None: JSON has no
    infinity or NaN."""
    res = evaluate(as_rgb(out), ref)
    clean = {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in res.items()}
    clean["seconds"] = None if seconds is None else round(float(seconds), 4)
    return {k: clean.get(k) for k in ("psnr", "ssim", "rmse", "niqe", "brisque", "seconds")}
