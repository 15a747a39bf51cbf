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
from .errors import ConfigError, InputError, one_line
from .methods.base import Result
from .tiling import check_tiling, tile_starts, windows

MAX_DATES = 3
#: ``Result.image`` of a scene is a preview decimated so its longest side is at most this many pixels.
PREVIEW_SIDE = 1024
_CHUNK = 128  # rows normalised and encoded at a time (bounds the temporaries)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ----------------------------------------------------------------------------------------------- routing
def is_tiff(path: str | os.PathLike) -> bool:
    """True if ``path`` is an existing file that starts with a TIFF/BigTIFF header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def is_scene(inputs: Sequence[str | os.PathLike], tile: int) -> bool:
    """Whether ``inputs`` should go through :func:`process_scene`: all dates are TIFFs and the first is
    larger than one tile. Unreadable files return False (the in-memory reader then gives the error)."""
    if not inputs or not all(is_tiff(p) for p in inputs):
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


def _crs_name(crs) -> str:
    if crs is None:
        return "none"
    try:
        return crs.to_string()
    except Exception:
        return str(crs)


def check_grid(srcs: Sequence[Any], paths: Sequence[Path]) -> tuple[int, int]:
    """Dates of one scene must share CRS, size and transform; returns (height, width)."""
    first, n1 = srcs[0], paths[0].name
    for i, (s, p) in enumerate(zip(srcs[1:], paths[1:]), 2):
        if s.crs != first.crs:
            raise InputError(f"date {i} ({p.name}) has CRS {_crs_name(s.crs)} but date 1 ({n1}) has "
                             f"{_crs_name(first.crs)}; dates of one scene must share CRS, transform and size")
        if (s.width, s.height) != (first.width, first.height):
            raise InputError(f"date {i} ({p.name}) is {s.width}x{s.height} but date 1 ({n1}) is "
                             f"{first.width}x{first.height}; dates of one scene must have the same size")
        if s.transform != first.transform:
            a, b = s.transform, first.transform
            if (a.a, a.e) != (b.a, b.e):
                what = f"pixel size {a.a:g}x{a.e:g} vs {b.a:g}x{b.e:g}"
            elif (a.c, a.f) != (b.c, b.f):
                what = f"origin ({a.c:g}, {a.f:g}) vs ({b.c:g}, {b.f:g})"
            else:
                what = "rotation terms differ"
            raise InputError(f"date {i} ({p.name}) has a different transform than date 1 ({n1}): {what}; "
                             f"dates of one scene must be on the same grid")
    h, w = first.height, first.width
    if min(h, w) < io.MIN_SIDE:
        raise InputError(f"{paths[0]}: image is {w}x{h}; each side must be at least {io.MIN_SIDE} px")
    if h * w > io.MAX_PIXELS:
        raise InputError(f"{paths[0]}: {w}x{h} is larger than the limit of {io.MAX_PIXELS} pixels")
    return h, w


# ----------------------------------------------------------------------------------------------- sinks
class _Sink:
    """Rows of one output file, written top to bottom; a temporary file until :meth:`commit`."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = io._atomic_target(path)

    def write(self, y: int, image: np.ndarray, valid: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def commit(self) -> None:
        self.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class _TiffSink(_Sink):
    """Windowed writes into a tiled, deflate-compressed GeoTIFF; rows are buffered to whole block rows so no
    compressed block is written twice."""

    def __init__(self, path: Path, profile: dict, names: Sequence[str], encode: Callable):
        super().__init__(path)
        import rasterio

        self.encode = encode
        self.dst = rasterio.open(self.tmp, "w", **profile)
        for i, n in enumerate(names, 1):
            self.dst.set_band_description(i, n)
        self.block = self.dst.block_shapes[0][0]
        self.height = profile["height"]
        self.pending: list[np.ndarray] = []
        self.y0 = 0  # first row not yet written to the file
        self.rows = 0

    def write(self, y: int, image: np.ndarray, valid: np.ndarray) -> None:
        from rasterio.windows import Window

        assert y == self.y0 + self.rows, "rows must arrive in order"
        self.pending.append(self.encode(image, valid))
        self.rows += image.shape[1]
        n = self.rows if self.y0 + self.rows >= self.height else (self.rows // self.block) * self.block
        if n == 0:
            return
        buf = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        self.dst.write(buf[:, :n], window=Window(0, self.y0, buf.shape[2], n))
        rest = buf[:, n:]
        self.pending = [rest] if rest.shape[1] else []
        self.y0 += n
        self.rows -= n

    def close(self) -> None:
        if self.dst is not None and not self.dst.closed:
            self.dst.close()


class _PngSink(_Sink):
    """An 8-bit PNG: held as uint8 (never float) and saved at commit."""

    def __init__(self, path: Path, height: int, width: int, channels: int, to_uint8: Callable):
        super().__init__(path)
        self.arr = np.zeros((height, width, channels), np.uint8)
        self.to_uint8 = to_uint8

    def write(self, y: int, image: np.ndarray, valid: np.ndarray) -> None:
        self.arr[y:y + image.shape[1]] = self.to_uint8(image)

    def commit(self) -> None:
        from PIL import Image

        a = self.arr[..., 0] if self.arr.shape[-1] == 1 else self.arr
        Image.fromarray(a).save(self.tmp, format="PNG")
        super().commit()


def _encoder(like: io.Raster, dtype: str, nodata) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Display [0,1] rows -> file values (:func:`io.encode`: invalid pixels -> nodata, NaN for float files
    without a nodata value; valid pixels are kept off the nodata value)."""
    return lambda image, valid: io.encode(image, like, dtype, nodata, valid)


def _output_sink(path: Path, like: io.Raster, c: int, h: int, w: int) -> _Sink:
    if path.suffix.lower() == ".png":
        return _PngSink(path, h, w, c, io.quantize)
    profile = io.geotiff_profile(like, c, h, w)
    profile["BIGTIFF"] = "IF_SAFER"
    if like.profile is None:
        profile["dtype"] = "uint8"
    names = list(like.bands[:c]) if len(like.bands) >= c else [f"band{i + 1}" for i in range(c)]
    return _TiffSink(path, profile, names, _encoder(like, profile["dtype"], profile.get("nodata")))


def _map_sink(path: Path, like: io.Raster, h: int, w: int) -> _Sink:
    """The uncertainty map, as :func:`api.write_map` writes it: raw float32 GeoTIFF or PNG min(1, 4 x value)."""
    if path.suffix.lower() == ".png":
        return _PngSink(path, h, w, 1, lambda m: io.quantize(np.clip(m * 4, 0, 1)))
    profile = io.geotiff_profile(like, 1, h, w)
    profile.update(dtype="float32", BIGTIFF="IF_SAFER")
    profile.pop("nodata", None)
    return _TiffSink(path, profile, ["uncertainty"], lambda m, v: np.where(v[None], m, np.nan).astype(np.float32))


# ----------------------------------------------------------------------------------------------- the loop
def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc). Tiles allocate and free many same-sized buffers, and
    without this the process's resident memory creeps up strip after strip through heap fragmentation."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


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

    from .api import model_input

    t0 = time.perf_counter()
    check_tiling(tile, overlap)
    if not 1 <= len(paths) <= MAX_DATES:
        raise InputError(f"got {len(paths)} input images; give 1 to {MAX_DATES} dates of one place")
    out = io.check_output_path(output)
    umap_path = io.check_output_path(uncertainty) if uncertainty is not None else None
    if umap_path is not None and not (getattr(method, "stochastic", False) and samples >= 2):
        raise ConfigError("--uncertainty needs a stochastic method and --samples N with N >= 2")
    paths = [Path(p) for p in paths]
    opts = dict(sampler=sampler, steps=steps, inr=inr, seed=seed, samples=samples)

    with ExitStack() as stack:
        srcs = _open_dates(paths, stack)
        h, w = check_grid(srcs, paths)
        # band selection / readability of every date, from a 1-pixel window
        likes = [io.read_window(p, Window(0, 0, 1, 1), bands, src=s) for p, s in zip(paths, srcs)]
        for i, r in enumerate(likes[1:], 2):
            if len(r.bands) != len(likes[0].bands):
                raise InputError(f"date {i} has {len(r.bands)} bands but date 1 has {len(likes[0].bands)}")
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
        sinks: list[_Sink] = []
        seen = [False] * len(paths)
        first: Result | None = None
        model_seconds, ran, k = 0.0, 0, 0
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
                        if first is None:
                            first = res
                            c, rows = res.image.shape[0], min(tile, h)
                            buf = {"acc": np.zeros((c, rows, w), np.float32), "wsum": np.zeros((rows, w), np.float32),
                                   "valid": np.zeros((rows, w), bool)}
                            if umap_path is not None:
                                buf["umap"] = np.zeros((rows, w), np.float32)
                            sinks.append(_output_sink(out, like, c, h, w))
                            if umap_path is not None:
                                sinks.append(_map_sink(umap_path, like, h, w))
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
                    _trim_heap()
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
                _trim_heap()
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

    notes = sorted(set(first.info.get("notes", [])) | {n for r in likes for n in r.notes})
    info = dict(first.info, notes=notes, bands=list(like.bands[:3]), tiles=ntiles, tiles_run=ran, tile=tile,
                overlap=overlap, scene=True, size=[h, w], preview_step=step, model_seconds=model_seconds)
    image = np.concatenate(preview, axis=1)
    return Result(image.astype(np.float32), {}, time.perf_counter() - t0, info)
