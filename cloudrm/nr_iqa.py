"""No-reference image quality: NIQE and BRISQUE (Mittal et al.) in numpy/scipy.

A port of the LIVE MATLAB releases (``niqe_release``: ``computequality.m``;
``brisque_release``: ``brisquescore.m``), using their standard parameters, shipped
in ``cloudrm/assets_iqa`` (see ``PROVENANCE.md`` there). Lower is better for both.
No torch, no OpenCV, no network: the parameter files are read with
``allow_pickle=False`` on first use.

Accepted inputs (``numpy`` arrays; anything else raises ``ValueError``):

* ``(H, W)`` gray, integer or float, on the [0, 255] scale: used as is (no rounding);
* ``(H, W, 3)`` / ``(H, W, 1)`` ``uint8`` RGB / gray (``(3, H, W)``, ``(1, H, W)`` too);
* ``(H, W, C)`` or ``(C, H, W)`` float in [0, 1] with C in {1, 3}: quantised to
  uint8 levels first (``round(255 * x)``), then treated as the uint8 case.
  The channel axis is the last one when its size is 1 or 3, else the first.

RGB is turned into gray as MATLAB ``rgb2gray`` on uint8 (weights
0.298936/0.587043/0.114021, rounded to integers) -- what both LIVE releases do.
``niqe(..., convert="y")`` uses the BT.601 luma instead,
``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` rounded (MATLAB
``rgb2ycbcr``, as basicsr); the two differ by up to ~0.15 NIQE.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma as _G

__all__ = ["niqe", "brisque", "brisque_features", "brisque_svr", "to_gray", "imresize"]

_ASSETS = Path(__file__).with_name("assets_iqa")
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
_BT601_Y = np.array([65.481, 128.553, 24.966]) / 255.0
_BLOCK = 96  # NIQE block size of the pristine model (no overlap)

# Shape-parameter grid 0.2:0.001:10 and the moment ratios it is matched against.
_GAM = 0.2 + 0.001 * np.arange(9801)
_R_GGD = _G(1 / _GAM) * _G(3 / _GAM) / _G(2 / _GAM) ** 2
_R_AGGD = 1 / _R_GGD


@functools.lru_cache(maxsize=None)
def _niqe_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(_ASSETS / "niqe_pris_params.npz", allow_pickle=False) as d:
        return d["mu_pris_param"].ravel(), d["cov_pris_param"], d["gaussian_window"]


@functools.lru_cache(maxsize=None)
def _brisque_model() -> dict[str, np.ndarray]:
    with np.load(_ASSETS / "brisque_live.npz", allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _round(x: np.ndarray) -> np.ndarray:
    """MATLAB round (half away from zero) for non-negative values."""
    return np.floor(x + 0.5)


def to_gray(image: np.ndarray, convert: Literal["gray", "y"] = "gray") -> np.ndarray:
    """Return a float64 (H, W) image on the [0, 255] scale (see module docstring)."""
    a = np.asarray(image)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"unsupported image dtype {a.dtype}")
    if convert not in ("gray", "y"):
        raise ValueError(f"convert must be 'gray' or 'y', got {convert!r}")
    if a.ndim == 2:
        g = a.astype(np.float64)
    elif a.ndim == 3:
        if a.shape[-1] not in (1, 3):
            if a.shape[0] not in (1, 3):
                raise ValueError(f"cannot find a channel axis of size 1 or 3 in shape {a.shape}")
            a = np.moveaxis(a, 0, -1)
        if a.dtype == np.uint8:
            x = a.astype(np.float64)
        elif np.issubdtype(a.dtype, np.floating):
            if not np.all(np.isfinite(a)) or a.min() < -1e-6 or a.max() > 1 + 1e-6:
                raise ValueError("3-D float images must lie in [0, 1]")
            x = _round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0)
        else:
            raise ValueError(f"3-D images must be uint8 or float in [0, 1], got {a.dtype}")
        if x.shape[-1] == 1:
            g = x[..., 0]
        elif convert == "gray":
            g = _round(x @ _RGB2GRAY)
        else:
            g = _round(16.0 + x @ _BT601_Y)
    else:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {a.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("image contains NaN or infinite values")
    return g


# ---------------------------------------------------------------- MATLAB imresize
def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=64)
def _resize_matrix(n_in: int, scale: float) -> np.ndarray:
    """(n_out, n_in) weights of MATLAB's bicubic imresize along one axis."""
    n_out = int(np.ceil(n_in * scale))
    width = 4.0 / scale if scale < 1 else 4.0  # antialiasing widens the kernel
    x = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coords
    idx = np.floor(x - width / 2)[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    d = x[:, None] - idx
    w = scale * _cubic(scale * d) if scale < 1 else _cubic(d)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])  # symmetric edges
    cols = mirror[np.mod(idx.astype(np.int64) - 1, mirror.size)]
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), idx.shape[1]), cols.ravel()), w.ravel())
    return m


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale)`` (bicubic, antialiased) of a 2-D float image."""
    rows = _resize_matrix(img.shape[0], float(scale))
    cols = _resize_matrix(img.shape[1], float(scale))
    return (rows @ img) @ cols.T  # rows first, as MATLAB for equal scales


# ---------------------------------------------------------------- shared statistics
def _mscn(img: np.ndarray, mode: str) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (7x7 Gaussian, sigma 7/6)."""
    win = _niqe_params()[2]  # fspecial('gaussian', 7, 7/6), normalised
    mu = correlate(img, win, mode=mode, cval=0.0)
    sigma = np.sqrt(np.abs(correlate(img * img, win, mode=mode, cval=0.0) - mu * mu))
    return (img - mu) / (sigma + 1)


def _mean_sq(v: np.ndarray) -> float:
    return float(np.mean(v * v)) if v.size else float("nan")  # MATLAB mean([]) is NaN


def _ggd(vec: np.ndarray) -> tuple[float, float]:
    """Generalised Gaussian fit by moment matching: (shape, std)."""
    sigma_sq = _mean_sq(vec)
    rho = sigma_sq / np.mean(np.abs(vec)) ** 2
    return float(_GAM[np.argmin(np.abs(rho - _R_GGD))]), float(np.sqrt(sigma_sq))


def _aggd(vec: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric GGD fit: (shape, left std, right std)."""
    lstd = np.sqrt(_mean_sq(vec[vec < 0]))
    rstd = np.sqrt(_mean_sq(vec[vec > 0]))
    gh = lstd / rstd
    rhat = np.mean(np.abs(vec)) ** 2 / _mean_sq(vec)
    rnorm = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    return float(_GAM[np.argmin((_R_AGGD - rnorm) ** 2)]), float(lstd), float(rstd)


# ---------------------------------------------------------------- NIQE
def _niqe_block(block: np.ndarray) -> list[float]:
    """computefeature.m: 18 AGGD features of one MSCN block."""
    alpha, l, r = _aggd(block.ravel())
    k = np.sqrt(_G(1 / alpha) / _G(3 / alpha))
    feat = [alpha, (l + r) * k / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, l, r = _aggd((block * np.roll(block, shift, axis=(0, 1))).ravel())
        k = np.sqrt(_G(1 / alpha) / _G(3 / alpha))
        feat += [alpha, (r - l) * k * _G(2 / alpha) / _G(1 / alpha), l * k, r * k]
    return feat


def _pinv(a: np.ndarray) -> np.ndarray:
    """MATLAB pinv: drop singular values <= max(size) * eps(norm(a))."""
    u, s, vt = np.linalg.svd(a)
    keep = s > max(a.shape) * np.spacing(s[0])
    return (vt[keep].T / s[keep]) @ u[:, keep].T


def niqe(image: np.ndarray, convert: Literal["gray", "y"] = "gray") -> float:
    """NIQE of ``image`` (LIVE ``computequality.m``, 96x96 blocks, no overlap).

    The image is cropped to its top-left multiple of 96 pixels; it must hold at
    least one 96x96 block, else ``ValueError``.
    """
    img = to_gray(image, convert)
    h, w = img.shape
    nh, nw = h // _BLOCK, w // _BLOCK
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs an image of at least {_BLOCK}x{_BLOCK} pixels, got {h}x{w}")
    img = img[: nh * _BLOCK, : nw * _BLOCK]
    mu_p, cov_p, _ = _niqe_params()
    feats = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for scale in (1, 2):
            mscn, b = _mscn(img, "nearest"), _BLOCK // scale  # 'replicate' padding
            feats.append([_niqe_block(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b])
                          for j in range(nw) for i in range(nh)])
            if scale == 1:
                img = imresize(img, 0.5)
        feat = np.hstack([np.asarray(f) for f in feats])  # (n_blocks, 36)
    # nanmean per feature; nancov on complete rows (MATLAB cov of one row is 0)
    rows = feat[~np.isnan(feat).any(axis=1)]
    if len(rows) == 0:
        raise ValueError("NIQE undefined: no 96x96 block has finite features (flat image?)")
    mu = np.nanmean(feat, axis=0)
    cov = np.cov(rows, rowvar=False) if len(rows) > 1 else np.zeros((36, 36))
    d = mu_p - mu
    return float(np.sqrt(max(d @ _pinv((cov_p + cov) / 2) @ d, 0.0)))


# ---------------------------------------------------------------- BRISQUE
def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features (``brisque_feature.m``, zero padding, 2 scales)."""
    img = to_gray(image)
    if min(img.shape) < 2:
        raise ValueError(f"BRISQUE needs an image of at least 2x2 pixels, got {img.shape[0]}x{img.shape[1]}")
    feat: list[float] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for scale in (1, 2):
            mscn = _mscn(img, "constant")  # filter2(..., 'same'): zero padding
            alpha, std = _ggd(mscn.ravel())
            feat += [alpha, std**2]
            for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                alpha, l, r = _aggd((mscn * np.roll(mscn, shift, axis=(0, 1))).ravel())
                k = np.sqrt(_G(1 / alpha) / _G(3 / alpha))
                feat += [alpha, (r - l) * _G(2 / alpha) / _G(1 / alpha) * k, l**2, r**2]
            if scale == 1:
                img = imresize(img, 0.5)
    out = np.asarray(feat)
    if not np.all(np.isfinite(out)):
        raise ValueError("BRISQUE undefined: the image is too small or too flat to score")
    return out


def brisque_svr(features: np.ndarray, prescaled: bool = False) -> float:
    """LIVE epsilon-SVR (RBF) on 36 features, with the MATLAB release's text rounding.

    Raw features are written with ``%f`` (``brisquescore.m``), rescaled to [-1, 1]
    with the ``allrange`` limits and written with ``%g`` (``svm-scale``); with
    ``prescaled=True`` the input is taken as svm-scale output.
    """
    m = _brisque_model()
    x = np.asarray(features, dtype=np.float64).ravel()
    if x.shape != (36,):
        raise ValueError(f"expected 36 BRISQUE features, got {x.size}")
    if not prescaled:
        x = np.array([float(f"{v:f}") for v in x])
        lo, hi = m["scale_lower_upper"]
        fmin, fmax = m["feature_min"], m["feature_max"]
        s = lo + (hi - lo) * (x - fmin) / (fmax - fmin)
        s = np.where(x == fmin, lo, np.where(x == fmax, hi, s))
        x = np.array([float(f"{v:g}") for v in s])
    d2 = np.sum((m["support_vectors"] - x) ** 2, axis=1)
    return float(m["dual_coef"] @ np.exp(-m["gamma"] * d2) - m["rho"])


def brisque(image: np.ndarray) -> float:
    """BRISQUE of ``image`` (LIVE ``brisquescore.m``; MATLAB rgb2gray for RGB).

    The MATLAB release prints the score with ``%g`` (6 significant digits); this
    returns it unrounded.
    """
    return brisque_svr(brisque_features(image))
