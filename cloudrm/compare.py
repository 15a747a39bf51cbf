"""Run methods on one scene for a service: write the outputs (PNG, GeoTIFF, maps) and score them.

The web app (``app.py``) only lays out what these functions return; nothing here imports gradio. The public
API's one-method call is :func:`run_one` (its PNG is what ``python -m cloudrm remove`` writes, via
:func:`cloudrm.api.remove_clouds`); the UI's side-by-side comparison is :func:`compare`. Options from remote
users are checked by :mod:`cloudrm.service` first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import io, metrics
from .api import model_input, read_dates, remove_clouds, run_method, write_map
from .errors import ConfigError
from .methods import METHODS
from .service import blank, check_choice, load, parse_options, parse_seed

ProgressFn = Callable[[float, str], None]

METRIC_COLUMNS = ["method", "settings", "PSNR (dB)", "SSIM", "RMSE", "NIQE", "BRISQUE", "seconds"]


def settings_text(info: dict[str, Any]) -> str:
    """A method's settings in a few words, e.g. "dpmpp 20 steps, K=3, rice2 weights, seed 0"."""
    parts = []
    steps = info.get("steps")
    if info.get("sampler") and steps:
        parts.append("1 step (direct prediction)" if steps == 1 else f"{info['sampler']} {steps} steps")
    if info.get("inr"):
        parts.append(f"K={info['inr']}")
    w = str(info.get("weights") or "")
    if w:
        w = w.removeprefix("bundled:") if w.startswith("bundled:") else (w if w.startswith("hub:") else Path(w).name)
        parts.append(f"{w} weights")
    if info.get("samples"):
        parts.append(f"{info['samples']} seeds")
    if "seed" in info and info.get("sampler"):
        parts.append(f"seed {info['seed']}")
    if info.get("tiles"):
        parts.append(f"{info['tiles']} tiles")
    return ", ".join(parts) or "-"


def geo_summary(raster: io.Raster) -> str | None:
    """Where a GeoTIFF lies: CRS, pixel size, footprint in lon/lat (with a map link) and the bands used."""
    if not raster.is_geo:
        return None
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    prof = raster.profile
    crs, t = prof["crs"], prof["transform"]
    h, w = raster.shape
    west, south, east, north = array_bounds(h, w, t)
    text = f"GeoTIFF in {crs.to_string()}, {w}x{h} px of {abs(t.a):g} x {abs(t.e):g} {crs.linear_units or 'units'}"
    try:
        lo0, la0, lo1, la1 = transform_bounds(crs, "EPSG:4326", west, south, east, north)
        link = (f"https://www.openstreetmap.org/?minlon={lo0:.5f}&minlat={la0:.5f}&maxlon={lo1:.5f}"
                f"&maxlat={la1:.5f}&box=yes")
        text += f"; footprint lon {lo0:.4f}…{lo1:.4f}, lat {la0:.4f}…{la1:.4f} ([map]({link}))"
    except Exception:  # a CRS without a transformation to lon/lat: the projected bounds are still true
        text += f"; bounds {west:.1f}, {south:.1f} … {east:.1f}, {north:.1f}"
    return text + f"; bands {', '.join(raster.bands[:3])} shown as R, G, B"


def _fmt(v: float | None, nd: int) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def metric_row(name: str, settings: str, met: dict[str, float | None], has_ref: bool) -> list[str]:
    # PSNR is None with a reference only when the output equals it (infinite PSNR)
    psnr = _fmt(met["psnr"], 2) if met["psnr"] is not None or not has_ref else "inf"
    return [name, settings, psnr, _fmt(met["ssim"], 4), _fmt(met["rmse"], 4), _fmt(met["niqe"], 2),
            _fmt(met["brisque"], 2), _fmt(met["seconds"], 2)]


def colormap(m: np.ndarray, vmax: float | None = None, name: str = "magma") -> np.ndarray:
    """(H,W) map -> (3,H,W) colour image in [0,1] for display."""
    import matplotlib

    vmax = float(np.nanmax(m)) if vmax is None else vmax
    norm = np.clip(np.nan_to_num(m) / max(vmax, 1e-8), 0, 1)
    return matplotlib.colormaps[name](norm)[..., :3].transpose(2, 0, 1).astype(np.float32)


def preview_png(raster: io.Raster, path: Path) -> str:
    """A browser-viewable PNG of a raster (TIFFs included), as the models see it."""
    io.write_image(path, io.as_rgb(io.to_display(raster)))
    return str(path)


# ----------------------------------------------------------------------------------------------- running
def run_one(paths: Sequence[str], work: Path, *, method: str, weights: Any = None, sampler: Any = None,
            steps: Any = None, inr: Any = None, seed: Any = 0, reference: str | None = None, device: Any = None,
            tile: int = 512, overlap: int = 32, progress: Callable[[int, int], None] | None = None,
            ) -> tuple[str, dict[str, float | None], str | None]:
    """One method on the dates ``paths``: (output PNG, metrics dict, output GeoTIFF or None).

    The PNG is written by :func:`cloudrm.api.remove_clouds`, so it is bit-identical to the CLI's; a GeoTIFF
    input also gets a georeferenced GeoTIFF. Options are checked (against their lists and ranges) before any
    file is read."""
    method = check_choice(method, METHODS, "method")
    if method is None:
        raise ConfigError(f"no method: choose one of {', '.join(METHODS)}")
    opts = parse_options(sampler, steps, inr)
    seed = parse_seed(seed)
    _, spec = load(method, weights, device)  # loads (and caches) with the uniform weights message
    rasters = read_dates(paths)
    ref = io.read_reference(reference, rasters[0])
    stem = re.sub(r"[^\w.-]+", "_", Path(paths[0]).stem)[:40] or "scene"
    out = work / f"{stem}_{method}.png"
    res = remove_clouds(paths, out, method=method, weights=spec, seed=seed, tile=tile, overlap=overlap,
                        progress=progress, device=device, **opts)
    tif = None
    like = rasters[0]
    if like.is_geo:
        _, valid = model_input(rasters)
        tif = str(io.write_image(out.with_suffix(".tif"), res.image,
                                 like=replace(like, bands=tuple(like.bands[: res.image.shape[0]])), valid=valid))
    return str(out), metrics.report(res.image, ref, res.seconds), tif


@dataclass
class Comparison:
    """What the UI shows after a comparison: every path is a file under the request's folder."""

    gallery: list[tuple[str, str]]          # cloudy dates, each method's output, the reference
    before: str                             # date 1 as PNG (the slider's left image)
    outputs: dict[str, str]                 # method -> output PNG
    maps: list[tuple[str, str]]             # cloud attention and uncertainty maps, coloured
    rows: list[list[str]]                   # METRIC_COLUMNS
    downloads: list[str]                    # PNG (and GeoTIFF) outputs and raw maps
    notes: list[str] = field(default_factory=list)
    geo: str | None = None                  # geo_summary of date 1


def compare(paths: Sequence[str], reference: str | None, methods: Sequence[str], work: Path, *,
            weights: Any = None, options: dict[str, dict[str, Any]] | None = None, seed: Any = 0,
            uncertainty_samples: int = 0, bands: Any = None, device: Any = None, tile: int = 512,
            overlap: int = 32, progress: ProgressFn | None = None) -> Comparison:
    """Run ``methods`` (in :data:`METHODS` order) on one scene and write everything the UI shows into ``work``.

    ``options``: per method ``{"sampler", "steps", "inr"}`` (checked here); ``weights``: the user's variant
    choice for every method; ``uncertainty_samples`` >= 2 draws that many seeds for stochastic methods."""
    chosen = [check_choice(m, METHODS, "method") for m in methods if m]
    methods = [m for m in METHODS if m in chosen]
    if not methods:
        raise ConfigError("no method selected: tick at least one method")
    options = {k: parse_options(**v) for k, v in (options or {}).items()}
    seed = parse_seed(seed)
    bands = blank(bands)
    if bands is not None and not re.fullmatch(r"[\w ]{1,12}(,[\w ]{1,12}){0,3}", str(bands)):
        raise ConfigError("bands: give 3 (or 4) 1-based indexes or band names separated by commas, e.g. 4,3,2 "
                          "or B04,B03,B02")
    progress = progress or (lambda f, d: None)
    rasters = read_dates(paths, bands)
    ref = io.read_reference(reference, rasters[0], bands)
    dates, valid = model_input(rasters)
    like = rasters[0]
    out_like = replace(like, bands=tuple(like.bands[:3]))
    scene = re.sub(r"[^\w.-]+", "_", Path(paths[0]).stem)[:40] or "scene"
    gallery = [(preview_png(r, work / f"date{i + 1}.png"), f"cloudy date {i + 1}") for i, r in enumerate(rasters)]
    c = Comparison(gallery, gallery[0][0], {}, [], [], [], sorted({n for r in rasters for n in r.notes}),
                   geo_summary(like))
    for k, name in enumerate(methods):
        progress(k / len(methods), f"loading {name}")
        m, _ = load(name, weights, device)
        opts = dict(options.get(name, {}))
        if m.stochastic and uncertainty_samples >= 2:
            opts["samples"] = int(uncertainty_samples)

        def cb(i: int, total: int, k: int = k, name: str = name) -> None:
            progress((k + i / max(total, 1)) / len(methods), f"{name}: {i}/{total}")

        res = run_method(m, dates, tile=tile, overlap=overlap, progress=cb, seed=seed, **opts)
        _write_outputs(c, name, res, work / f"{scene}_{name}", out_like, valid, like.is_geo)
        met = metrics.report(res.image, ref, res.seconds)
        c.rows.append(metric_row(name, settings_text(res.info), met, ref is not None))
        c.notes += [f"{name}: {x}" for x in res.info.get("notes", [])]
    if ref is not None:
        c.gallery.append((str(io.write_image(work / "reference.png", ref)), "reference (cloud-free)"))
    progress(1.0, "done")
    return c


def _write_outputs(c: Comparison, name: str, res, base: Path, like: io.Raster, valid: np.ndarray,
                   geo: bool) -> None:
    """One method's PNG (and GeoTIFF), its gallery caption and its maps, added to ``c``."""
    png = str(io.write_image(base.with_suffix(".png"), res.image, like=like, valid=valid))
    c.outputs[name] = png
    c.downloads.append(png)
    if geo:
        c.downloads.append(str(io.write_image(base.with_suffix(".tif"), res.image, like=like, valid=valid)))
    settings = settings_text(res.info)
    c.gallery.append((png, f"{name} · {res.seconds:.2f} s" if settings == "-" else
                      f"{name} · {settings} · {res.seconds:.2f} s"))
    if "cloud" in res.maps:
        cloud = res.maps["cloud"]
        shown = io.write_image(f"{base}_cloud_display.png", colormap(cloud, 1.0, "viridis"))
        c.maps.append((str(shown), f"{name}: cloud attention (0 = clear, 1 = cloud)"))
        c.downloads.append(str(io.write_image(f"{base}_cloud.png", np.clip(cloud, 0, 1)[None])))
    if "uncertainty" in res.maps:
        u = res.maps["uncertainty"]
        vmax = float(np.max(u)) if u.size else 0.0
        shown = io.write_image(f"{base}_uncertainty_display.png", colormap(u, vmax))
        c.maps.append((str(shown), f"{name}: uncertainty, std over {res.info.get('samples')} seeds (max {vmax:.3f})"))
        c.downloads.append(str(write_map(f"{base}_uncertainty.png", u)))
        if geo:
            c.downloads.append(str(write_map(f"{base}_uncertainty.tif", u, like, valid)))

