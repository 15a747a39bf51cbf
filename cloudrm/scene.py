"""Whole scenes: a GeoTIFF of any size through any method with bounded memory and no seams.

The scene is cut into tiles of ``tile`` px that overlap by at least ``overlap`` px (:func:`tiling.windows`).
For every tile the window of each date is read with rasterio (:func:`io.read_window`), turned into model
input (nodata/NaN filled with the tile's mean valid colour, never fed as values), run through the method and
added to float accumulators with the tile's feathered (raised-cosine) weight.

Tiles are processed in horizontal strips. Only the current strip (``tile`` rows x scene width) is held as
float, plus the rows it shares with the next strip; rows that no later tile touches are divided by the summed
weights, encoded to the file's dtype and written with windowed writes (whole GeoTIFF block rows at a time)
into a tiled, deflate-compressed GeoTIFF that keeps the first date's CRS, transform, nodata, dtype and
reflectance scale. Pixels that are invalid in any date are written as nodata. Output (and uncertainty map)
go to a temporary name in the target folder and are renamed when complete, so a failure leaves nothing.

Every tile is called with the same seed, so stochastic samplers start from the same generator state on each
tile. Tiles whose pixels are all invalid are not run through the method.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import io
from .dates import Grid, check_bands, check_count, check_grid, model_input, whole_image_notes
from .errors import ConfigError, InputError, one_line
from .methods import Result
from .runtime import trim_heap
from .tiling import check_tiling, tile_starts, windows

#: ``Result.image`` of a scene is a preview decimated so its longest side is at most this many pixels.
PREVIEW_SIDE = 1024
_CHUNK = 128  # rows normalised and encoded at a time (bounds the temporaries)


# ----------------------------------------------------------------------------------------------- routing
def is_scene(inputs: Sequence[str | os.PathLike], tile: int) -> bool:
    """Whether ``inputs`` should go through :func:`process_scene`: all dates are TIFFs and the first is
    larger than one tile. Unreadable files return False (the in-memory reader then gives the error)."""
    if not inputs or not all(io.is_tiff(p) for p in inputs):
        return False
    try:
        import rasterio

        with rasterio.open(inputs[0]) as src:
            return max(src.width, src.height) > tile
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------- checks
def _open_dates(paths: Sequence[Path], stack: ExitStack) -> list:
    import rasterio

    srcs = []
    for p in paths:
        io.check_file(p)
        try:
            srcs.append(stack.enter_context(rasterio.open(p)))
        except Exception as exc:
            msg = one_line(exc)
            raise InputError(f"{p}: not a readable TIFF ({msg})") from None
    return srcs


def _check_scene(srcs: Sequence[Any], paths: Sequence[Path]) -> tuple[int, int]:
    """The dates' grid (:func:`dates.check_grid`) and the scene's size limits; returns (height, width)."""
    check_grid([Grid.of_dataset(s, p.name) for s, p in zip(srcs, paths)])
    h, w = srcs[0].height, srcs[0].width
    if min(h, w) < io.MIN_SIDE:
        raise InputError(f"{paths[0]}: image is {w}x{h}; each side must be at least {io.MIN_SIDE} px")
    if h * w > io.MAX_PIXELS:
        raise InputError(f"{paths[0]}: {w}x{h} is larger than the limit of {io.MAX_PIXELS} pixels")
    return h, w


# ----------------------------------------------------------------------------------------------- the loop
def process_scene(method, paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, bands=None,
                  tile: int = 512, overlap: int = 32, uncertainty: str | os.PathLike | None = None,
                  progress: Callable[[int, int], None] | None = None, sampler=None, steps=None, inr=None,
                  seed: int = 0, samples: int = 1) -> Result:
    """Run ``method`` over a whole scene (1-3 TIFF dates) tile by tile and write ``output`` (.tif or .png).

    Returns a :class:`Result` whose ``image`` is a preview decimated by ``info["preview_step"]`` (1, i.e.
    the full image, for scenes up to :data:`PREVIEW_SIDE` px); ``seconds`` is the wall time.
    """
    import rasterio
    from rasterio.windows import Window

    t0 = time.perf_counter()
    check_tiling(tile, overlap)
    check_count(len(paths))
    out = io.check_output_path(output)
    umap_path = io.check_output_path(uncertainty) if uncertainty is not None else None
    if umap_path is not None and not (getattr(method, "stochastic", False) and samples >= 2):
        raise ConfigError("--uncertainty needs a stochastic method and --samples N with N >= 2")
    paths = [Path(p) for p in paths]
    opts = dict(sampler=sampler, steps=steps, inr=inr, seed=seed, samples=samples)

    with ExitStack() as stack:
        srcs = _open_dates(paths, stack)
        h, w = _check_scene(srcs, paths)
        # band selection / readability of every date, from a 1-pixel window
        likes = [io.read_window(p, Window(0, 0, 1, 1), bands, src=s) for p, s in zip(paths, srcs)]
        check_bands(likes)
        like = likes[0]
        # GDAL's block cache: enough for one strip of input blocks of every date (so overlapping tiles and
        # striped files are decoded once), not the whole scene
        itemsize = max(np.dtype(s.dtypes[0]).itemsize for s in srcs)
        cache = sum(s.count for s in srcs) * itemsize * (tile + 256) * w + 64 * 2**20
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=int(min(cache, 1024 * 2**20))))

        ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        ntiles = len(ys) * len(xs)
        step = max(1, math.ceil(max(h, w) / PREVIEW_SIDE))
        preview: list[np.ndarray] = []
        sinks: list[io.RowWriter] = []
        seen = [False] * len(paths)
        first: Result | None = None
        model_seconds, ran, k = 0.0, 0, 0
        white, area = 0.0, 0  # white-on-every-date pixels of the tiles run, and their pixels
        # float accumulators for one strip (tile rows x scene width), allocated once and reused: rows shared
        # with the next strip are moved to the top, the rest is cleared
        buf: dict[str, np.ndarray] = {}
        carried = 0
        try:
            for iy, (y, group) in enumerate(groupby(windows(h, w, tile, overlap), key=lambda t: t[0])):
                th = min(tile, h - y)
                next_y = ys[iy + 1] if iy + 1 < len(ys) else h
                for name, v in buf.items():
                    v[..., carried:, :] = 0
                for _, x, _, tw, wt in group:
                    win = Window(x, y, tw, th)
                    rasters = [io.read_window(p, win, bands, src=s) for p, s in zip(paths, srcs)]
                    dates, valid_t = model_input(rasters)
                    for i, r in enumerate(rasters):
                        seen[i] = seen[i] or bool(r.valid.any())
                    res = None
                    if valid_t.any() or first is None:  # the first tile always runs: it fixes the band count
                        res = method(list(dates), **opts)
                        model_seconds += res.seconds
                        ran += 1
                        white += res.info.get("white_fraction", 0.0) * th * tw
                        area += th * tw
                        if first is None:
                            first = res
                            c, rows = res.image.shape[0], min(tile, h)
                            buf = {"acc": np.zeros((c, rows, w), np.float32), "wsum": np.zeros((rows, w), np.float32),
                                   "valid": np.zeros((rows, w), bool)}
                            if umap_path is not None:
                                buf["umap"] = np.zeros((rows, w), np.float32)
                            sinks.append(io.image_row_writer(out, like, c, h, w))
                            if umap_path is not None:
                                sinks.append(io.map_row_writer(umap_path, like, h, w))
                        if res.image.shape[0] != buf["acc"].shape[0]:
                            raise InputError(f"{method.name} returned {res.image.shape[0]} bands on one tile "
                                             f"and {buf['acc'].shape[0]} on another")
                    buf["valid"][:th, x:x + tw] = valid_t
                    if res is not None:
                        buf["acc"][:, :th, x:x + tw] += res.image * wt
                        buf["wsum"][:th, x:x + tw] += wt
                        if umap_path is not None:
                            buf["umap"][:th, x:x + tw] += res.maps["uncertainty"] * wt
                    k += 1
                    del rasters, dates, res
                    trim_heap()
                    if progress is not None:
                        progress(k, ntiles)
                # rows [y, next_y) are final (no later strip reaches them): normalise, encode, write, in chunks
                n = next_y - y if iy + 1 < len(ys) else th
                for r in range(0, n, _CHUNK):
                    e = min(n, r + _CHUNK)
                    ws = np.maximum(buf["wsum"][r:e], 1e-8)
                    img = buf["acc"][:, r:e] / ws
                    np.clip(img, 0, 1, out=img)
                    valid = buf["valid"][r:e]
                    sinks[0].write(y + r, img, valid)
                    if umap_path is not None:
                        sinks[1].write(y + r, (buf["umap"][r:e] / ws)[None], valid)
                    r0 = (-(y + r)) % step
                    preview.append(img[:, r0::step, ::step].copy())  # a copy: a view would keep the chunk
                carried = th - n
                if carried:
                    for v in buf.values():
                        v[..., :carried, :] = v[..., n:th, :].copy()
                trim_heap()
            for i, ok in enumerate(seen):
                if not ok:
                    raise InputError(f"{paths[i]}: every pixel is nodata/NaN; nothing to process")
            for s in sinks:
                s.commit()
        except BaseException:
            for s in sinks:
                try:
                    s.abort()
                except Exception:
                    pass
            raise

    # the cover note is the whole scene's, not the first tile's (tiles overlap a little: an estimate)
    fraction = white / max(area, 1)
    notes = whole_image_notes(first.info.get("notes", []), first.info.get("white_fraction", 0.0), fraction)
    notes = sorted(set(notes) | {n for r in likes for n in r.notes})
    info = dict(first.info, notes=notes, white_fraction=round(fraction, 4), bands=list(like.bands[:3]), tiles=ntiles, tiles_run=ran, tile=tile,
                overlap=overlap, scene=True, size=[h, w], preview_step=step, model_seconds=model_seconds)
    image = np.concatenate(preview, axis=1)
    return Result(image.astype(np.float32), {}, time.perf_counter() - t0, info)
