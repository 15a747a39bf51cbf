"""Overlapping tiles with feathered blending, so a method runs on an image of any size without seams.

Tiles of ``tile`` px overlap by ``overlap`` px; each output tile is weighted by a raised-cosine ramp across
the overlap (1 inside), and the weighted sum is divided by the summed weights. A pixel covered by one tile
gets exactly that tile's value; across a border the two tiles cross-fade smoothly.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .errors import ConfigError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` that overlap by at least ``overlap``."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def feather(h: int, w: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """(h, w) weights: raised-cosine ramps of the given widths at each side that borders another tile."""
    def ramp(n: int, a: int, b: int) -> np.ndarray:
        r = np.ones(n, np.float64)
        if a > 0:
            r[:a] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(a) + 0.5) / a)
        if b > 0:
            r[n - b:] = np.minimum(r[n - b:], (0.5 - 0.5 * np.cos(np.pi * (np.arange(b) + 0.5) / b))[::-1])
        return r
    return np.outer(ramp(h, top, bottom), ramp(w, left, right)).astype(np.float32)


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 64:
        raise ConfigError(f"--tile must be at least 64 px, got {tile}")
    if not 0 <= overlap < tile // 2:
        raise ConfigError(f"--overlap must be in 0..{tile // 2 - 1} for tile {tile}, got {overlap}")


def windows(h: int, w: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """(y, x, th, tw, weight) for every tile of an (h, w) image."""
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            th, tw = min(tile, h - y), min(tile, w - x)
            top = (ys[iy - 1] + tile - y) if iy > 0 else 0
            bottom = (y + th - ys[iy + 1]) if iy + 1 < len(ys) else 0
            left = (xs[ix - 1] + tile - x) if ix > 0 else 0
            right = (x + tw - xs[ix + 1]) if ix + 1 < len(xs) else 0
            yield y, x, th, tw, feather(th, tw, top, bottom, left, right)


def run_tiled(fn: Callable[[np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]], dates: np.ndarray,
              tile: int = 512, overlap: int = 32,
              progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Apply ``fn`` (dates (N,C,th,tw) -> image (C,th,tw), maps {name: (th,tw)}) tile by tile and blend."""
    check_tiling(tile, overlap)
    n, c, h, w = dates.shape
    wins = list(windows(h, w, tile, overlap))
    acc = None
    maps_acc: dict[str, np.ndarray] = {}
    wsum = np.zeros((h, w), np.float32)
    for k, (y, x, th, tw, wt) in enumerate(wins):
        img, maps = fn(dates[:, :, y:y + th, x:x + tw])
        if acc is None:
            acc = np.zeros((img.shape[0], h, w), np.float32)
        acc[:, y:y + th, x:x + tw] += img * wt
        for name, m in maps.items():
            maps_acc.setdefault(name, np.zeros((h, w), np.float32))[y:y + th, x:x + tw] += m * wt
        wsum[y:y + th, x:x + tw] += wt
        if progress is not None:
            progress(k + 1, len(wins))
    wsum = np.maximum(wsum, 1e-8)
    return acc / wsum, {k: v / wsum for k, v in maps_acc.items()}
