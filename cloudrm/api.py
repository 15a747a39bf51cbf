"""File-level API: read the dates of one scene, run a method (tiled when large), write the outputs.

The CLI's ``remove`` and the app call :func:`remove_clouds`; methods themselves only see arrays.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from . import io
from .errors import ConfigError, InputError
from .methods import Result, load_method
from .tiling import check_tiling, run_tiled

MAX_DATES = 3


def read_dates(paths: Sequence[str | os.PathLike], bands=None) -> list[io.Raster]:
    """Read 1-3 dates of one scene and check they agree in size, bands and georeferencing."""
    if not 1 <= len(paths) <= MAX_DATES:
        raise InputError(f"got {len(paths)} input images; give 1 to {MAX_DATES} dates of one place")
    rasters = [io.read_image(p, bands) for p in paths]
    first = rasters[0]
    for i, r in enumerate(rasters[1:], 2):
        if r.shape != first.shape:
            raise InputError(f"date {i} is {r.shape[1]}x{r.shape[0]} but date 1 is {first.shape[1]}x{first.shape[0]}; "
                             f"dates must have the same size")
        if first.is_geo and r.is_geo:
            if r.profile["crs"] != first.profile["crs"]:
                raise InputError(f"date {i} has CRS {r.profile['crs']} but date 1 has {first.profile['crs']}")
            if r.profile["transform"] != first.profile["transform"]:
                raise InputError(f"date {i} has a different geotransform than date 1 (not the same grid)")
        if len(r.bands) != len(first.bands):
            raise InputError(f"date {i} has {len(r.bands)} bands but date 1 has {len(first.bands)}")
    return rasters


def model_input(rasters: Sequence[io.Raster]) -> tuple[np.ndarray, np.ndarray]:
    """(N,C,H,W) display values and the (H,W) mask of pixels valid in every date.

    Invalid pixels (nodata, NaN) are filled with the date's mean valid colour so a model never sees them
    as values; they are written back as nodata.
    """
    valid = np.logical_and.reduce([r.valid for r in rasters])
    dates = []
    for r in rasters:
        d = io.to_display(r)
        if not r.valid.all():
            fill = d[:, r.valid].mean(axis=1) if r.valid.any() else np.zeros(d.shape[0], np.float32)
            d[:, ~r.valid] = fill[:, None]
        dates.append(d)
    c = max(d.shape[0] for d in dates)
    dates = [np.repeat(d, 3, 0) if d.shape[0] == 1 and c == 1 else d for d in dates]
    return np.stack(dates), valid


def run_method(method, dates: np.ndarray, *, tile: int = 512, overlap: int = 32, progress=None, **opts) -> Result:
    """Call a method on (N,C,H,W) dates; images larger than ``tile`` go through feathered tiles."""
    n, c, h, w = dates.shape
    if max(h, w) <= tile:
        return method(list(dates), progress=progress, **opts)
    check_tiling(tile, overlap)
    infos: list[Result] = []

    def fn(sub: np.ndarray):
        res = method(list(sub), **opts)
        infos.append(res)
        return res.image, res.maps

    image, maps = run_tiled(fn, dates, tile, overlap, progress)
    info = dict(infos[0].info, tiles=len(infos), tile=tile, overlap=overlap)
    return Result(np.clip(image, 0, 1).astype(np.float32), maps, sum(r.seconds for r in infos), info)


def remove_clouds(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None, *,
                  method: str = "identity", weights: str | None = None, sampler: str | None = None,
                  steps: int | None = None, inr: int | None = None, seed: int = 0, samples: int = 1,
                  bands=None, uncertainty: str | os.PathLike | None = None, tile: int = 512, overlap: int = 32,
                  progress=None, device=None) -> Result:
    """Remove clouds from the dates ``inputs`` of one scene; write ``output`` (.png, or .tif keeping the
    first date's georeferencing and dtype scale) and, with ``samples`` >= 2, the ``uncertainty`` map.
    ``device``: where the method runs (default CPU), as in :func:`cloudrm.load_method`.

    TIFF/GeoTIFF dates larger than one ``tile`` that are written to ``output`` go through
    :func:`cloudrm.scene.process_scene` (windowed reads and writes, bounded memory); their ``Result.image``
    is then a preview decimated by ``info["preview_step"]`` (1 = full image, for scenes up to 1024 px).
    """
    if output is not None:
        io.check_output_path(output)
    if uncertainty is not None:
        io.check_output_path(uncertainty)
        if samples < 2:
            raise ConfigError("--uncertainty needs --samples N with N >= 2")
    check_tiling(tile, overlap)
    m = load_method(method, weights, device)
    m.settings(sampler, steps, inr)  # fail on bad options before reading anything large
    if uncertainty is not None and not m.stochastic:
        raise ConfigError(f"{method} is deterministic: it has no uncertainty map")
    if not 1 <= len(inputs) <= MAX_DATES:
        raise InputError(f"got {len(inputs)} input images; give 1 to {MAX_DATES} dates of one place")
    from . import scene

    if output is not None and scene.is_scene(inputs, tile):
        return scene.process_scene(m, inputs, output, bands=bands, tile=tile, overlap=overlap,
                                   uncertainty=uncertainty, progress=progress, sampler=sampler, steps=steps,
                                   inr=inr, seed=seed, samples=samples)
    rasters = read_dates(inputs, bands)
    dates, valid = model_input(rasters)
    res = run_method(m, dates, tile=tile, overlap=overlap, progress=progress, sampler=sampler, steps=steps,
                     inr=inr, seed=seed, samples=samples)
    notes = list(res.info.get("notes", [])) + [n for r in rasters for n in r.notes]
    res = replace(res, info=dict(res.info, notes=sorted(set(notes)), bands=list(rasters[0].bands[:3])))
    like = rasters[0]
    if output is not None:
        out_like = replace(like, bands=tuple(like.bands[: res.image.shape[0]]))
        io.write_image(output, res.image, like=out_like, valid=valid)
    if uncertainty is not None:
        u = res.maps.get("uncertainty")
        if u is None:
            raise ConfigError(f"{method} is deterministic: it has no uncertainty map")
        write_map(uncertainty, u, like, valid)
    return res


def write_map(path: str | os.PathLike, m: np.ndarray, like: io.Raster | None = None, valid=None) -> Path:
    """A (H,W) map: GeoTIFF float32 (raw values, georeferenced like ``like``) or PNG (min(1, 4 x value))."""
    p = Path(path)
    if p.suffix.lower() == ".png":
        return io.write_image(p, np.clip(m * 4, 0, 1)[None])
    geo = replace(like, dtype="float32", scale=1.0, gain=1.0, bands=("uncertainty",)) if like is not None and like.is_geo else None
    if geo is not None and geo.profile is not None:
        geo.profile = dict(geo.profile, nodata=None)
    return io.write_image(p, m[None].astype(np.float32), like=geo, valid=valid)
