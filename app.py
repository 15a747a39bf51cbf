"""cloudrm web app (Hugging Face Space): remove clouds from satellite images, compare methods side by side.

Run ``python app.py`` (honours ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``). The page offers samples
(RICE1, RICE2, Sentinel-2), uploads of 1-3 cloudy dates of one place plus an optional cloud-free reference, a
multi-method comparison with metrics, a before/after slider, cloud-attention and uncertainty maps, PNG (and,
for GeoTIFF input, GeoTIFF) downloads, and an About tab.

Limits (the README repeats them):

* Images whose longer side exceeds :data:`MAX_SIDE` = 1024 px are **refused** with a message that states the
  limit (on 2 vCPU a 1024 px DiffCR run already takes tens of seconds per method; larger scenes belong to the
  CLI, ``python -m cloudrm remove``, which tiles them). Inside the limit, sides over 512 px run tiled
  (512 px tiles, 32 px overlap), exactly as the CLI does.
* Uploads over 20 MB are refused by the server (``max_file_size``); the queue holds at most 16 requests and
  runs one model job at a time (2 vCPU).

Public API, one method per call (``gradio_client``)::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    png, metrics = client.predict(images=[handle_file("cloudy.png")], method="median", weights=None,
                                  sampler=None, steps=None, inr=None, seed=0,
                                  reference=handle_file("clear.png"), api_name="/remove_clouds")

``png`` is the output written by :func:`cloudrm.api.remove_clouds` (the function behind
``python -m cloudrm remove``, so the two agree bit for bit for deterministic methods); ``metrics`` has
``psnr``, ``ssim``, ``rmse`` (null without a reference), ``niqe``, ``brisque`` (null when the image is too small
for them) and ``seconds``. Every other event is private.

Nothing here loads a model or touches the network at import time, except on ZeroGPU (``SPACES_ZERO_GPU`` set),
where the default models load at import as ZeroGPU requires.
"""
from __future__ import annotations

import os

for _k, _v in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10"}.items():
    os.environ.setdefault(_k, _v)

from cloudrm.runtime import tune_malloc  # noqa: E402

# glibc gives each of Gradio's worker threads its own malloc arena, and freed image buffers stay in them: RSS then
# climbed by ~40 % under 8 concurrent clients. Two arenas keep it flat; freed blocks are kept for reuse.
tune_malloc(arenas=2)

import hashlib  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterable, Sequence  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import cloudrm  # noqa: E402
from cloudrm import io, metrics, samples as samples_mod, weights as weights_mod  # noqa: E402
from cloudrm.api import model_input, read_dates, remove_clouds, run_method, write_map  # noqa: E402
from cloudrm.errors import CloudRMError  # noqa: E402
from cloudrm.methods import METHODS, load_method, method_class  # noqa: E402

try:  # ZeroGPU: the decorator asks for a GPU per call; off Spaces the package is a no-op (or absent)
    import spaces  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None

log = logging.getLogger("cloudrm.app")

#: Longest image side the app accepts, in pixels (larger images are refused with this number in the message).
MAX_SIDE = 1024
#: Dates per scene.
MAX_DATES = 3
#: Tiling, as in the CLI defaults.
TILE, OVERLAP = 512, 32
MAX_UNCERTAINTY_SAMPLES = 8
FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
SAMPLERS = [("DPM-Solver++ (2M)", "dpmpp"), ("DDIM", "ddim"), ("DDPM", "ddpm")]
VARIANT_CHOICES = [("default of each method", "default"), ("rice1 (thin clouds)", "rice1"),
                   ("rice2 (thick clouds)", "rice2"), ("sen2 (Sentinel-2, DiffCR)", "sen2")]
DEEP = ("pixel-cr", "idf-cr", "diffcr")
REPO = Path(__file__).resolve().parent
LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": "20mb"}
QUEUE_KWARGS: dict[str, Any] = {"max_size": 16, "default_concurrency_limit": 1}

DEVICE = "cuda" if torch.cuda.is_available() else None  # None = CPU, the package's default
OUT_ROOT = Path(tempfile.gettempdir()) / "cloudrm-app"
KEEP_SECONDS = 3600  # request folders older than this are deleted

ABOUT_METHODS = """\
- **identity** returns the first cloudy date unchanged: the floor every method has to beat.
- **median** takes the per-pixel median of the dates (their mean for two dates); with one date it is the identity.
- **Pixel-CR** is IDF-CR's first stage: a Swin-style network that removes clouds in one forward pass and
  predicts where the clouds are (the *cloud-attention map*).
- **IDF-CR** refines Pixel-CR's output with a latent diffusion model steered by a ControlNet; *INR K* is the number
  of in-context training passes per batch (K = 1 is plain ControlNet training).
- **DiffCR** is a conditional diffusion model that predicts the clear image from 1-3 cloudy dates, with the
  condition encoder run once per image; sampled with DPM-Solver++ (default, 20 steps), DDIM or DDPM. Running it
  with several seeds gives an *uncertainty map*: the per-pixel standard deviation over the samples.
"""


# ----------------------------------------------------------------------------------------------- helpers
def _gpu(fn):
    """``spaces.GPU`` where the package is importable (ZeroGPU), otherwise the function itself."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=120)(fn)


def _one_line(text: str) -> str:
    lines = [s.strip() for s in str(text).splitlines() if s.strip()]
    return lines[0] if lines else ""


def _clean(msg: str, paths: Iterable[str | os.PathLike | None] = ()) -> str:
    """One line, with the server's upload folders replaced by the file names the user knows."""
    msg = _one_line(msg)
    for p in sorted({str(p) for p in paths if p}, key=len, reverse=True):
        msg = msg.replace(p, Path(p).name)
    msg = msg.replace(str(REPO) + os.sep, "")  # bundled files: relative to the app
    msg = re.sub(r"(?<![\w.-])(/[^\s:'\"]+)+/([^/\s:'\"]+)", r"\2", msg)  # other absolute paths -> names
    return msg


@contextmanager
def _user_errors(paths: Iterable[str | os.PathLike | None] = (), ui: bool = False):
    """Every failure reaches the user as one line (``gr.Error``); unexpected ones are logged in full."""
    paths = list(paths)
    try:
        yield
    except gr.Error:
        raise
    except CloudRMError as exc:
        msg = _clean(str(exc), paths)
        if ui:  # the package words band choice for the CLI
            msg = msg.replace("with --bands", "in Advanced settings → Bands").replace("--bands", "Bands")
        raise gr.Error(msg, title="cloudrm", print_exception=False) from None
    except ImportError as exc:
        raise gr.Error(f"this method is not part of this version of cloudrm ({_clean(str(exc))})",
                       title="cloudrm", print_exception=False) from None
    except MemoryError:
        raise gr.Error(f"out of memory; use smaller images (at most {MAX_SIDE} px a side)",
                       title="cloudrm", print_exception=False) from None
    except Exception as exc:  # a bug: keep the app up, say so in one line, log the traceback
        log.exception("unexpected error")
        raise gr.Error(f"internal error ({type(exc).__name__}: {_clean(str(exc), paths)})",
                       title="cloudrm", print_exception=False) from None


def _workdir() -> Path:
    """A fresh folder for one request's outputs; folders older than an hour are removed."""
    OUT_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for d in OUT_ROOT.glob("req-*"):
        try:
            if now - d.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="req-", dir=OUT_ROOT))


def _file_paths(files) -> list[str]:
    """gr.File values (paths, FileData-like objects or dicts) -> list of paths."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    out = []
    for f in files:
        if f is None:
            continue
        if isinstance(f, dict):
            f = f.get("path") or f.get("name")
        out.append(str(getattr(f, "path", None) or getattr(f, "name", None) or f) if not isinstance(f, str) else f)
    return out


def _check_inputs(images, reference=None) -> tuple[list[str], str | None]:
    """Count and size checks that need no decoding; returns the date paths and the reference path."""
    paths = _file_paths(images)
    ref = _file_paths(reference)
    if not paths:
        raise gr.Error("no input image: upload 1 to 3 cloudy dates of one place (PNG, JPEG, TIFF) or pick a sample",
                       title="cloudrm", print_exception=False)
    if len(paths) > MAX_DATES:
        raise gr.Error(f"got {len(paths)} images; give 1 to {MAX_DATES} dates of one place",
                       title="cloudrm", print_exception=False)
    if len(ref) > 1:
        raise gr.Error("give one reference image", title="cloudrm", print_exception=False)
    for p in paths + ref:
        size = io.probe_size(p)
        if size is not None and max(size) > MAX_SIDE:
            raise gr.Error(f"{Path(p).name} is {size[0]}x{size[1]} px; this app accepts images up to {MAX_SIDE} px "
                           f"a side (use the CLI, python -m cloudrm remove, for larger scenes)",
                           title="cloudrm", print_exception=False)
    return paths, (ref[0] if ref else None)


def _colormap(m: np.ndarray, vmax: float | None = None, name: str = "magma") -> np.ndarray:
    """(H,W) map -> (3,H,W) colour image in [0,1] for display."""
    import matplotlib

    vmax = float(np.nanmax(m)) if vmax is None else vmax
    norm = np.clip(np.nan_to_num(m) / max(vmax, 1e-8), 0, 1)
    return matplotlib.colormaps[name](norm)[..., :3].transpose(2, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- methods
_status_lock = threading.Lock()
_status_cache: dict[tuple, str | None] = {}


def method_status(name: str) -> str | None:
    """None when ``name`` runs with its bundled weights, else a one-line reason.

    The weights are really loaded once (the package caches the model, so the first run is then quick); the
    answer is remembered per weights folder and ``cloudrm.json`` modification time, so weights that appear or
    change while the app runs are picked up on the next page load."""
    if name in ("identity", "median"):
        return None
    try:
        method_class(name)
    except ImportError:
        return "not in this version of cloudrm yet"
    except CloudRMError as exc:
        return _one_line(str(exc))
    present = weights_mod.variants_present(name)
    if not present:
        return "its bundled weights are not in this checkout yet"
    spec = weights_mod.spec_for(name, None)
    folder = weights_mod.bundled_dir(name, spec or weights_mod.VARIANTS[name][1])
    try:
        key = (name, spec, (folder / "cloudrm.json").stat().st_mtime_ns)
    except OSError:
        return "its bundled weights are not in this checkout yet"
    with _status_lock:
        if key in _status_cache:
            return _status_cache[key]
    try:
        _load(name, spec)
        why = None
    except CloudRMError as exc:
        why = f"weights do not load: {_clean(str(exc))}"
    except ImportError as exc:
        why = f"not in this version of cloudrm yet ({_clean(str(exc))})"
    except Exception as exc:  # a broken file must not take the page down
        log.exception("loading %s failed", name)
        why = f"weights do not load ({type(exc).__name__}: {_clean(str(exc))})"
    with _status_lock:
        _status_cache[key] = why
    return why


def available_methods() -> list[str]:
    return [m for m in METHODS if method_status(m) is None]


def _load(name: str, weights: str | None):
    return load_method(name, weights, DEVICE)


def _method_opts(name: str, m, *, diffcr_sampler, diffcr_steps, idf_sampler, idf_steps, inr, unc) -> dict:
    opts: dict[str, Any] = {}
    if name == "diffcr":
        opts.update(sampler=diffcr_sampler or None, steps=int(diffcr_steps) if diffcr_steps else None)
    elif name == "idf-cr":
        opts.update(sampler=idf_sampler or None, steps=int(idf_steps) if idf_steps else None,
                    inr=int(inr) if inr else None)
    if getattr(m, "stochastic", False) and unc and int(unc) >= 2:
        opts["samples"] = int(unc)
    return opts


def _settings_text(info: dict) -> str:
    parts = []
    if info.get("sampler"):
        parts.append(f"{info['sampler']} {info.get('steps')} steps")
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


# ----------------------------------------------------------------------------------------------- samples
_samples_lock = threading.Lock()
_samples_cache: list[samples_mod.Sample] | None = None
GROUP_KEYS = list(samples_mod.GROUPS)


def get_samples() -> list[samples_mod.Sample]:
    """The sample registry, read once per process (on first page load, never at import)."""
    global _samples_cache
    with _samples_lock:
        if _samples_cache is None:
            try:
                _samples_cache = samples_mod.list_samples()
            except Exception:  # the page must still come up
                log.exception("sample registry failed")
                _samples_cache = []
        return _samples_cache


def _sample_copy(sample: samples_mod.Sample) -> tuple[list[str], str | None, str]:
    """Copies of a sample's files under the app's temp folder (files outside it cannot be served)."""
    slug = hashlib.sha1(f"{sample.source}:{sample.name}".encode()).hexdigest()[:12]
    folder = OUT_ROOT / "samples" / slug
    folder.mkdir(parents=True, exist_ok=True)

    def copy(src: str, name: str) -> str:
        dst = folder / name
        if not dst.exists():
            tmp = folder / f".{name}.part"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        return str(dst)

    names = [Path(d).name for d in sample.dates]
    if len(set(names)) < len(names):
        names = [f"date{i + 1}_{n}" for i, n in enumerate(names)]
    dates = [copy(d, n) for d, n in zip(sample.dates, names)]
    ref = copy(sample.reference, f"reference_{Path(sample.reference).name}") if sample.reference else None
    thumb = folder / "thumb.png"
    if not thumb.exists():
        r = io.read_image(dates[0])
        io.write_image(thumb, io.as_rgb(io.to_display(r)))
    return dates, ref, str(thumb)


def _group_gallery(group: str) -> list[tuple[str, str]]:
    items = []
    for s in get_samples():
        if s.group != group:
            continue
        try:
            _, _, thumb = _sample_copy(s)
        except Exception:
            log.exception("sample %s unusable", s.name)
            continue
        items.append((thumb, f"{s.name} ({len(s.dates)} date{'s' if len(s.dates) > 1 else ''})"))
    return items


def _group_samples(group: str) -> list[samples_mod.Sample]:
    return [s for s in get_samples() if s.group == group]


# ----------------------------------------------------------------------------------------------- About
def _notebook_links() -> str:
    nbs = sorted((REPO / "notebooks").glob("*.ipynb"))
    space = os.environ.get("SPACE_ID")
    if not nbs:
        return "The notebooks live in `notebooks/` of the repository."
    out = []
    for nb in nbs:
        rel = f"notebooks/{nb.name}"
        url = f"https://huggingface.co/spaces/{space}/blob/main/{rel}" if space else rel
        out.append(f"- [{nb.stem}]({url})")
    return "\n".join(out)


def about_markdown() -> str:
    status = []
    for m in METHODS:
        why = method_status(m)
        status.append(f"- `{m}`: " + ("available" if why is None else f"unavailable ({why})"))
    return (f"## cloudrm {cloudrm.__version__}\n\nRemoves clouds from optical satellite images: one to three "
            f"cloudy dates of one place in, one cloud-free estimate out.\n\n### Methods\n{ABOUT_METHODS}\n"
            f"### In this app\n" + "\n".join(status) +
            f"\n\n### Weights\n{weights_mod.summary_table()}\n\n### Notebooks\n{_notebook_links()}\n\n"
            f"### Limits\nImages up to {MAX_SIDE} px a side (larger ones are refused; the CLI tiles any size), "
            f"uploads up to 20 MB, 1-{MAX_DATES} dates. PSNR/SSIM/RMSE are computed on the 8-bit PNG output "
            f"against the reference; NIQE/BRISQUE need no reference (lower is better).\n")


# ----------------------------------------------------------------------------------------------- API endpoint
#: newer cloudrm.api.remove_clouds take ``device=``; older ones run on CPU only (then _run_pieces is used on CUDA)
_REMOVE_HAS_DEVICE = "device" in inspect.signature(remove_clouds).parameters


def _run_pieces(paths: Sequence[str], out: Path, *, method: str, weights, sampler, steps, inr, seed, progress):
    """remove_clouds' steps with an explicit device, for a remove_clouds without a device parameter."""
    m = _load(method, weights)
    m.settings(sampler, steps, inr)
    rasters = read_dates(paths)
    dates, valid = model_input(rasters)
    res = run_method(m, dates, tile=TILE, overlap=OVERLAP, progress=progress, sampler=sampler, steps=steps,
                     inr=inr, seed=seed)
    like = rasters[0]
    io.write_image(out, res.image, like=replace(like, bands=tuple(like.bands[: res.image.shape[0]])), valid=valid)
    return res


def _none_if_blank(v):
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        return None if v == "" or v.lower() in ("none", "null", "default") else v
    return v


def _as_int(v, name: str):
    v = _none_if_blank(v)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be an integer, got {v!r}", title="cloudrm", print_exception=False) from None
    if not f.is_integer():
        raise gr.Error(f"{name} must be an integer, got {v!r}", title="cloudrm", print_exception=False)
    return int(f)


@_gpu
def api_remove_clouds(images, method, weights=None, sampler=None, steps=None, inr=None, seed=0, reference=None,
                      progress=gr.Progress()):
    """Remove clouds from 1-3 dates of one place with one method.

    Parameters:
        images: 1-3 cloudy dates of one place (PNG, JPEG, TIFF or GeoTIFF), all the same size.
        method: identity, median, pixel-cr, idf-cr or diffcr.
        weights: a weights variant (rice1, rice2, sen2), a local folder or a hub repo id; None for the default.
        sampler: dpmpp, ddim or ddpm for the diffusion methods; None for the method's default.
        steps: sampler steps 1-50; None for the method's default (diffcr 20, idf-cr 50).
        inr: IDF-CR's INR K (1, 2 or 3); None for the default (3).
        seed: the seed of the per-request random generator.
        reference: optional cloud-free image of the same place and size, for PSNR, SSIM and RMSE.
    Returns:
        The output PNG (what `python -m cloudrm remove` writes) and the metrics psnr, ssim, rmse, niqe, brisque,
        seconds (null where not computable).
    """
    method = _none_if_blank(method)
    weights = _none_if_blank(weights)
    sampler = _none_if_blank(sampler)
    steps, inr = _as_int(steps, "steps"), _as_int(inr, "inr")
    seed = _as_int(seed, "seed") or 0
    paths, ref_path = _check_inputs(images, reference)
    if method is None:
        raise gr.Error(f"no method: choose one of {', '.join(METHODS)}", title="cloudrm", print_exception=False)
    with _user_errors(paths + ([ref_path] if ref_path else [])):
        rasters = read_dates(paths)
        ref = io.read_reference(ref_path, rasters[0])
        out = _workdir() / f"{Path(paths[0]).stem}_{method}.png"

        def cb(i, n):
            progress((i, n), desc=f"{method}")

        if DEVICE is None or _REMOVE_HAS_DEVICE:
            kw = {"device": DEVICE} if _REMOVE_HAS_DEVICE else {}
            res = remove_clouds(paths, out, method=method, weights=weights, sampler=sampler, steps=steps, inr=inr,
                                seed=seed, tile=TILE, overlap=OVERLAP, progress=cb, **kw)
        else:
            res = _run_pieces(paths, out, method=method, weights=weights, sampler=sampler, steps=steps, inr=inr,
                              seed=seed, progress=cb)
        return str(out), metrics.report(res.image, ref, res.seconds)


# ----------------------------------------------------------------------------------------------- UI handlers
def _preview_png(raster: io.Raster, path: Path) -> str:
    io.write_image(path, io.as_rgb(io.to_display(raster)))
    return str(path)


METRIC_COLUMNS = ["method", "settings", "PSNR (dB)", "SSIM", "RMSE", "NIQE", "BRISQUE", "seconds"]


def _fmt(v: float | None, nd: int) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


@_gpu
def compare(dates_files, reference_file, methods, diffcr_sampler, diffcr_steps, idf_sampler, idf_steps, inr,
            variant, seed, unc_samples, bands, slider_choice, progress=gr.Progress()):
    """The UI's multi-method comparison (private)."""
    paths, ref_path = _check_inputs(dates_files, reference_file)
    chosen = [m for m in (methods or []) if m]
    methods = [m for m in METHODS if m in chosen] + [m for m in chosen if m not in METHODS]
    if not methods:
        raise gr.Error("no method selected: tick at least one method", title="cloudrm", print_exception=False)
    seed = _as_int(seed, "seed") or 0
    bands = _none_if_blank(bands)
    with _user_errors(paths + ([ref_path] if ref_path else []), ui=True):
        rasters = read_dates(paths, bands)
        ref = io.read_reference(ref_path, rasters[0], bands)
        dates, valid = model_input(rasters)
        work = _workdir()
        like = rasters[0]
        scene = re.sub(r"[^\w.-]+", "_", Path(paths[0]).stem)[:40] or "scene"
        gallery: list[tuple[str, str]] = []
        for i, r in enumerate(rasters):
            gallery.append((_preview_png(r, work / f"date{i + 1}.png"), f"cloudy date {i + 1}"))
        before = gallery[0][0]
        outputs: dict[str, str] = {}
        maps: list[tuple[str, str]] = []
        rows = []
        downloads: list[str] = []
        notes = sorted({n for r in rasters for n in r.notes})
        if like.profile is not None:
            notes.append(f"TIFF input: bands {', '.join(like.bands[:3])} shown as R, G, B")
        n = len(methods)
        for k, name in enumerate(methods):
            progress(k / n, desc=f"loading {name}")
            m = _load(name, weights_mod.spec_for(name, _none_if_blank(variant)))
            opts = _method_opts(name, m, diffcr_sampler=diffcr_sampler, diffcr_steps=diffcr_steps,
                                idf_sampler=idf_sampler, idf_steps=idf_steps, inr=inr, unc=unc_samples)

            def cb(i, total, k=k, name=name):
                progress((k + i / max(total, 1)) / n, desc=f"{name}: {i}/{total}")

            res = run_method(m, dates, tile=TILE, overlap=OVERLAP, progress=cb, seed=seed, **opts)
            out_like = replace(like, bands=tuple(like.bands[: res.image.shape[0]]))
            png = io.write_image(work / f"{scene}_{name}.png", res.image, like=out_like, valid=valid)
            outputs[name] = str(png)
            downloads.append(str(png))
            if like.is_geo:
                downloads.append(str(io.write_image(work / f"{scene}_{name}.tif", res.image, like=out_like,
                                                    valid=valid)))
            settings = _settings_text(res.info)
            gallery.append((str(png), f"{name} · {res.seconds:.2f} s" if settings == "-" else
                            f"{name} · {settings} · {res.seconds:.2f} s"))
            met = metrics.report(res.image, ref, res.seconds)
            rows.append([name, settings, _fmt(met["psnr"], 2) if met["psnr"] is not None or ref is None else "inf",
                         _fmt(met["ssim"], 4), _fmt(met["rmse"], 4), _fmt(met["niqe"], 2), _fmt(met["brisque"], 2),
                         _fmt(met["seconds"], 2)])
            notes += [f"{name}: {x}" for x in res.info.get("notes", [])]
            if "cloud" in res.maps:
                cloud = res.maps["cloud"]
                p = io.write_image(work / f"{scene}_{name}_cloud_display.png", _colormap(cloud, 1.0, "viridis"))
                maps.append((str(p), f"{name}: cloud attention (0 = clear, 1 = cloud)"))
                downloads.append(str(io.write_image(work / f"{scene}_{name}_cloud.png", np.clip(cloud, 0, 1)[None])))
            if "uncertainty" in res.maps:
                u = res.maps["uncertainty"]
                vmax = float(np.max(u)) if u.size else 0.0
                p = io.write_image(work / f"{scene}_{name}_uncertainty_display.png", _colormap(u, vmax))
                maps.append((str(p), f"{name}: uncertainty, std over {opts.get('samples')} seeds (max {vmax:.3f})"))
                downloads.append(str(write_map(work / f"{scene}_{name}_uncertainty.png", u)))
                if like.is_geo:
                    downloads.append(str(write_map(work / f"{scene}_{name}_uncertainty.tif", u, like, valid)))
        if ref_path is not None:
            gallery.append((_preview_png(io.read_image(ref_path), work / "reference.png"), "reference (cloud-free)"))
        progress(1.0, desc="done")
    pick = slider_choice if slider_choice in outputs else methods[-1]
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    if not any(m in ("pixel-cr", "idf-cr") for m in methods) and not maps:
        maps_note = "Maps appear for Pixel-CR / IDF-CR (cloud attention) and, with uncertainty samples ≥ 2, for DiffCR / IDF-CR."
    else:
        maps_note = ""
    note_md = "\n".join(f"- {x}" for x in dict.fromkeys(notes)) if notes else ""
    if ref is None:
        note_md = (note_md + "\n" if note_md else "") + "- no reference given: PSNR, SSIM and RMSE need one"
    if maps_note:
        note_md = (note_md + "\n" if note_md else "") + f"- {maps_note}"
    state = {"before": before, "outputs": outputs}
    return (gallery, gr.update(choices=list(outputs), value=pick), (before, outputs[pick]),
            gr.update(value=maps, visible=bool(maps)), df, downloads, note_md, state)


def pick_slider(choice, state):
    if not state or choice not in (state.get("outputs") or {}):
        return gr.update()
    return (state["before"], state["outputs"][choice])


def preview_inputs(files):
    """Thumbnails of the uploaded dates (TIFFs are shown as PNG); silent on unreadable files (Run reports them)."""
    paths = _file_paths(files)
    if not paths or len(paths) > MAX_DATES:
        return []
    work = None
    out = []
    for i, p in enumerate(paths):
        size = io.probe_size(p)
        if size is None or max(size) > MAX_SIDE:
            return []
        try:
            r = io.read_image(p)
        except Exception:
            return []
        work = work or _workdir()
        out.append((_preview_png(r, work / f"preview{i + 1}.png"), f"date {i + 1}: {Path(p).name}"))
    return out


def refresh_page():
    """On page load: methods whose weights are present now, the samples, the About text."""
    avail = available_methods()
    missing = [f"`{m}` ({method_status(m)})" for m in METHODS if m not in avail]
    default = [m for m in ("pixel-cr", "diffcr") if m in avail] or [m for m in ("median",) if m in avail]
    note = ("Not available now: " + "; ".join(missing) + ". They appear here as soon as their weights are in place."
            if missing else "")
    galleries = [_group_gallery(g) for g in GROUP_KEYS]
    notices = samples_mod.notices()
    return ([gr.update(choices=avail, value=default), note]
            + [gr.update(value=items, visible=bool(items)) for items in galleries]
            + [about_markdown(), "\n".join(f"- {n}" for n in notices)])


def make_sample_handler(group: str):
    def select_sample(evt: gr.SelectData):
        items = _group_samples(group)
        if evt is None or evt.index is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        idx = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= idx < len(items):
            return gr.update(), gr.update(), gr.update(), gr.update()
        s = items[idx]
        with _user_errors(s.dates):
            dates, ref, _ = _sample_copy(s)
        variant = samples_mod.GROUP_VARIANT.get(s.group, "default")
        msg = f"Sample **{s.name}** ({samples_mod.GROUPS.get(s.group, s.group)}, {s.source}); weights variant set to `{variant}`."
        return dates, ref, variant, msg
    return select_sample


# ----------------------------------------------------------------------------------------------- layout
CSS = """
#title h1 {margin-bottom: 0}
.sample-gallery .caption-label {font-size: 11px}
"""


def build_demo() -> gr.Blocks:
    """The whole page; queue configured. Launch with ``demo.launch(**LAUNCH_KWARGS)``."""
    with gr.Blocks(title="cloudrm: remove clouds from satellite images", delete_cache=(3600, 7200)) as demo:
        gr.Markdown("# ☁️ cloudrm: remove clouds from satellite images\n"
                    "Pick a sample or upload 1-3 cloudy dates of one place, choose methods, and compare them "
                    "with the cloudy input and the cloud-free reference.", elem_id="title")
        with gr.Tabs():
            with gr.Tab("Remove clouds", id="main"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        gr.Markdown("### 1. Pick a sample")
                        sample_galleries = []
                        for g in GROUP_KEYS:
                            sample_galleries.append(gr.Gallery(
                                label=samples_mod.GROUPS[g], columns=4, fit_columns=False, height=140, allow_preview=False,
                                object_fit="cover", format="png", buttons=[], interactive=False,
                                elem_id=f"samples_{g.lower().replace('-', '')}", elem_classes=["sample-gallery"]))
                        sample_note = gr.Markdown(elem_id="sample_note")
                        gr.Markdown("### 2. … or upload your own")
                        dates = gr.File(label=f"Cloudy date(s): 1-{MAX_DATES} images of one place, same size "
                                              f"(PNG, JPEG, TIFF, GeoTIFF; up to {MAX_SIDE} px a side)",
                                        file_count="multiple", file_types=FILE_TYPES, type="filepath",
                                        elem_id="dates", height=140)
                        reference = gr.File(label="Cloud-free reference (optional, for PSNR/SSIM/RMSE)",
                                            file_count="single", file_types=FILE_TYPES, type="filepath",
                                            elem_id="reference", height=90)
                        input_preview = gr.Gallery(label="Input preview", columns=3, height=140, format="png",
                                                   allow_preview=False, buttons=[], interactive=False,
                                                   elem_id="input_preview")
                        gr.Markdown("### 3. Methods")
                        methods = gr.CheckboxGroup(choices=["identity", "median"], value=["median"],
                                                   label="Methods to compare", elem_id="methods")
                        methods_note = gr.Markdown(elem_id="methods_note")
                        with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                            with gr.Row():
                                diffcr_sampler = gr.Radio(SAMPLERS, value="dpmpp", label="DiffCR sampler",
                                                          elem_id="diffcr_sampler")
                                diffcr_steps = gr.Slider(1, 50, value=20, step=1, label="DiffCR steps",
                                                         elem_id="diffcr_steps")
                            with gr.Row():
                                idf_sampler = gr.Radio(SAMPLERS, value="ddpm", label="IDF-CR sampler",
                                                       elem_id="idf_sampler")
                                idf_steps = gr.Slider(1, 50, value=50, step=1, label="IDF-CR steps",
                                                      elem_id="idf_steps")
                            inr = gr.Radio([1, 2, 3], value=3, label="IDF-CR INR K (passes per batch in training)",
                                           elem_id="inr")
                            variant = gr.Dropdown(VARIANT_CHOICES, value="default", allow_custom_value=True,
                                                  label="Weights variant (preset by the sample's group; or a "
                                                        "weights folder / hub repo id)", elem_id="variant")
                            with gr.Row():
                                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                                unc_samples = gr.Slider(0, MAX_UNCERTAINTY_SAMPLES, value=0, step=1,
                                                        label="Uncertainty samples (0 = off; ≥ 2 seeds for a map)",
                                                        elem_id="unc_samples")
                            bands = gr.Textbox(label="Bands of a multiband GeoTIFF as R,G,B (1-based indexes or "
                                                     "names, e.g. 4,3,2 or B04,B03,B02; empty = from the file)",
                                               placeholder="4,3,2", elem_id="bands")
                        run = gr.Button("Remove clouds", variant="primary", elem_id="run")
                    with gr.Column(scale=3, min_width=420):
                        results = gr.Gallery(label="Cloudy date(s) | each method | reference", columns=4,
                                             height="auto", format="png", object_fit="contain",
                                             buttons=["download", "fullscreen"], interactive=False,
                                             elem_id="results")
                        with gr.Row(equal_height=False):
                            with gr.Column(scale=1, min_width=140):
                                slider_method = gr.Radio([], label="Before / after for", elem_id="slider_method")
                            with gr.Column(scale=3):
                                slider = gr.ImageSlider(label="Cloudy date 1 | output", format="png", type="filepath",
                                                        max_height=420, buttons=["download", "fullscreen"],
                                                        interactive=False, elem_id="slider")
                        metrics_df = gr.Dataframe(headers=METRIC_COLUMNS, interactive=False, wrap=True,
                                                  max_height=260, label="Metrics (PSNR/SSIM/RMSE need a reference; "
                                                  "NIQE/BRISQUE: lower is better)", elem_id="metrics")
                        maps = gr.Gallery(label="Maps: Pixel-CR cloud attention, uncertainty (std over seeds)",
                                          columns=3, height=300, format="png", object_fit="contain",
                                          buttons=["download", "fullscreen"], interactive=False, visible=False,
                                          elem_id="maps")
                        downloads = gr.File(label="Downloads (PNG; GeoTIFF when the input is a GeoTIFF)",
                                            file_count="multiple", interactive=False, elem_id="downloads")
                        notes = gr.Markdown(elem_id="notes")
                        state = gr.State({})
            with gr.Tab("About", id="about"):
                about = gr.Markdown(elem_id="about")
                sample_notices = gr.Markdown(elem_id="sample_notices")

        # the public API: hidden inputs/outputs, one method per call
        with gr.Column(visible=False):
            api_images = gr.File(file_count="multiple", file_types=FILE_TYPES, type="filepath", label="images")
            api_method = gr.Textbox(value="identity", label="method")
            api_weights = gr.Textbox(label="weights")
            api_sampler = gr.Textbox(label="sampler")
            api_steps = gr.Number(value=None, precision=0, label="steps")
            api_inr = gr.Number(value=None, precision=0, label="inr")
            api_seed = gr.Number(value=0, precision=0, label="seed")
            api_reference = gr.File(file_types=FILE_TYPES, type="filepath", label="reference")
            api_output = gr.Image(type="filepath", format="png", label="output")
            api_metrics = gr.JSON(label="metrics")
            api_button = gr.Button("api")
        api_button.click(api_remove_clouds,
                         [api_images, api_method, api_weights, api_sampler, api_steps, api_inr, api_seed,
                          api_reference],
                         [api_output, api_metrics], api_name="remove_clouds", concurrency_id="model",
                         concurrency_limit=1)

        run.click(compare,
                  [dates, reference, methods, diffcr_sampler, diffcr_steps, idf_sampler, idf_steps, inr, variant,
                   seed, unc_samples, bands, slider_method],
                  [results, slider_method, slider, maps, metrics_df, downloads, notes, state],
                  api_visibility="private", concurrency_id="model", concurrency_limit=1)
        slider_method.change(pick_slider, [slider_method, state], slider, api_visibility="private",
                             concurrency_limit=None, show_progress="hidden")
        dates.change(preview_inputs, dates, input_preview, api_visibility="private", concurrency_limit=None,
                     show_progress="hidden")
        for g, gal in zip(GROUP_KEYS, sample_galleries):
            gal.select(make_sample_handler(g), None, [dates, reference, variant, sample_note],
                       api_visibility="private", concurrency_limit=None)
        demo.load(refresh_page, None, [methods, methods_note, *sample_galleries, about, sample_notices],
                  api_visibility="private", concurrency_limit=None)
    demo.queue(**QUEUE_KWARGS)
    return demo


def _zero_gpu_preload() -> None:
    """ZeroGPU wants models on CUDA at import: load the default weights of every available deep method."""
    for name in DEEP:
        if method_status(name) is None:
            try:
                _load(name, None)
            except Exception:  # the page still comes up; the error shows when the method is used
                log.exception("preloading %s failed", name)


if os.environ.get("SPACES_ZERO_GPU"):
    _zero_gpu_preload()

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**LAUNCH_KWARGS)
