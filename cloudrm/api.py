"""File-level API: read the dates of one scene, run a method (tiled when large), write the outputs.

The CLI's ``remove`` and the app call :func:`remove_clouds`; methods themselves only see arrays.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import numpy as np

from . import io, scene
from .dates import check_count, is_sentinel2, model_input, read_dates, white_fraction, whole_image_notes
from .errors import ConfigError
from .io import write_map
from .methods import Result, load_method
from .tiling import check_tiling, run_tiled
from .weights import variants_of

__all__ = ["remove_clouds", "run_method", "read_dates", "model_input", "write_map"]


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
    first = infos[0].info
    fraction = white_fraction(dates[: getattr(method, "max_dates", n)])
    info = dict(first, tiles=len(infos), tile=tile, overlap=overlap, white_fraction=round(fraction, 4),
                notes=whole_image_notes(first.get("notes", []), first.get("white_fraction", 0.0), fraction))
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
    if weights is None and inputs and is_sentinel2(inputs[0]) and "sen2" in variants_of(method):
        weights = "sen2"  # Sentinel-2 reflectance: the weights trained on real Sentinel-2 clouds
    m = load_method(method, weights, device)
    m.settings(sampler, steps, inr)  # fail on bad options before reading anything large
    if uncertainty is not None and not m.stochastic:
        raise ConfigError(f"{method} is deterministic: it has no uncertainty map")
    check_count(len(inputs))
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
        io.write_image(output, res.image, like=out_like, valid=valid, tags=io.band_tags(like, res.image.shape[0]))
    if uncertainty is not None:
        u = res.maps.get("uncertainty")
        if u is None:
            raise ConfigError(f"{method} is deterministic: it has no uncertainty map")
        write_map(uncertainty, u, like, valid)
    return res

