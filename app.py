"""cloudrm web app (Hugging Face Space): remove clouds from satellite images, compare methods side by side.

Run ``python app.py`` (honours ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``). Layout and argument handling
only; running methods, writing outputs and scoring live in :mod:`cloudrm.compare` and :mod:`cloudrm.service`.
Limits (the README repeats them): up to :data:`MAX_SIDE` px a side (sides over 512 px run tiled as in the CLI),
20 MB uploads, 1-3 dates; one model job at a time, at most :data:`MAX_JOBS_PER_CLIENT` waiting per client (page
loads, previews and sample picks never wait); results kept an hour, 512 MB in all (CLOUDRM_RESULTS_MB). Remote
users pick bundled weights; folders and hub ids only with ``CLOUDRM_ALLOW_WEIGHTS_PATHS=1``.

Public API (``gradio_client``): ``png, metrics = client.predict(images=[handle_file("cloudy.png")],
method="median", weights=None, sampler=None, steps=None, inr=None, seed=0, reference=handle_file("clear.png"),
api_name="/remove_clouds")``. ``png`` is what ``python -m cloudrm remove`` writes (bit for bit for deterministic
methods); ``metrics``: ``psnr``, ``ssim``, ``rmse`` (null without a reference), ``niqe``, ``brisque``,
``seconds``. ``/remove_clouds_geotiff`` adds a third output, the GeoTIFF for a GeoTIFF input (else null).
Every other event is private. Nothing loads a model or touches the network at import, except on ZeroGPU.
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

import logging  # noqa: E402
import functools  # noqa: E402
import ipaddress  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import cloudrm  # noqa: E402
from cloudrm import compare as cmp, io, samples as samples_mod, service as svc  # noqa: E402
from cloudrm.api import read_dates  # noqa: E402
from cloudrm.methods.base import MAX_DATES  # noqa: E402
from cloudrm.errors import CloudRMError, one_line  # noqa: E402
from cloudrm.methods import METHODS  # noqa: E402

try:  # ZeroGPU: the decorator asks for a GPU per call; off Spaces the package is a no-op (or absent)
    import spaces  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    spaces = None

log = logging.getLogger("cloudrm.app")

MAX_SIDE = 1024  #: longest image side the app accepts (px)
TILE, OVERLAP = 512, 32  #: as the CLI's defaults
MAX_UNCERTAINTY_SAMPLES = 8
MAX_JOBS_PER_CLIENT, MAX_JOBS_PER_HOST = 3, 8  #: jobs one session / one address may have waiting
FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
SAMPLERS = [("DPM-Solver++ (2M)", "dpmpp"), ("DDIM", "ddim"), ("DDPM", "ddpm")]
VARIANT_CHOICES = [("default of each method", "default"), ("rice1 (thin clouds)", "rice1"),
                   ("rice2 (thick clouds)", "rice2"), ("sen2 (Sentinel-2, DiffCR)", "sen2")]
REPO = Path(__file__).resolve().parent
LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": "20mb", "css_paths": [str(REPO / "app.css")]}
QUEUE_KWARGS: dict[str, Any] = {"max_size": 32, "default_concurrency_limit": 1}

DEVICE = "cuda" if torch.cuda.is_available() else None  # None = CPU, the package's default
# Results go under Gradio's own cache folder: files there are served as they are, not copied a second time.
CACHE = Path(gr.utils.get_upload_folder())
STORE = svc.ResultStore(CACHE / "cloudrm-results", max_bytes=int(os.environ.get("CLOUDRM_RESULTS_MB", 512)) * 2**20,
                        max_age=3600, interval=60)
SAMPLE_DIR = CACHE / "cloudrm-samples"

# ----------------------------------------------------------------------------------------------- helpers
def _gpu(fn):  # ZeroGPU asks for a GPU per call; elsewhere the function itself
    return fn if spaces is None else spaces.GPU(duration=120)(fn)


def _error(msg: str) -> gr.Error:
    return gr.Error(msg, title="cloudrm", print_exception=False)


@contextmanager
def _user_errors(paths=(), ui: bool = False):
    """Every failure reaches the user as one line (``gr.Error``); unexpected ones are logged in full."""
    try:
        yield
    except gr.Error:
        raise
    except CloudRMError as exc:
        msg = svc.clean_message(one_line(exc), paths, REPO)
        if ui:  # the package words band choice for the CLI
            msg = msg.replace("with --bands", "in Advanced settings → Bands").replace("--bands", "Bands")
        raise _error(msg) from None
    except MemoryError:
        raise _error(f"out of memory; use smaller images (at most {MAX_SIDE} px a side)") from None
    except Exception as exc:  # a bug: keep the app up, say so in one line, log the traceback
        log.exception("unexpected error")
        raise _error(f"internal error ({type(exc).__name__}: {svc.clean_message(one_line(exc), paths, REPO)})") from None


def _file_paths(files) -> list[str]:
    """gr.File values (paths, FileData-like objects or dicts) -> list of paths."""
    files = [] if files is None else files if isinstance(files, (list, tuple)) else [files]
    out = []
    for f in files:
        if isinstance(f, dict):
            f = f.get("path") or f.get("name")
        if f is not None:
            out.append(f if isinstance(f, str) else str(getattr(f, "path", None) or getattr(f, "name", None) or f))
    return out


def _check_inputs(images, reference=None) -> tuple[list[str], str | None]:
    """Count and size checks that need no decoding; returns the date paths and the reference path."""
    paths, ref = _file_paths(images), _file_paths(reference)
    with _user_errors(paths + ref):
        svc.check_files(paths, ref, MAX_SIDE, MAX_DATES)
    return paths, (ref[0] if ref else None)


def _client_host(request) -> str:
    """The client's address; behind a proxy on a private address (as on Spaces) the one that proxy appended
    last to X-Forwarded-For (earlier entries are whatever the client sent)."""
    host = request.client.host if request is not None and request.client else ""
    try:
        proxied = ipaddress.ip_address(host).is_private
    except ValueError:
        proxied = False
    fwd = request.headers.get("x-forwarded-for", "") if proxied else ""
    return fwd.split(",")[-1].strip() or host


def _cap_jobs_per_client(demo: gr.Blocks) -> None:
    """Refuse a new queued job when its session already has MAX_JOBS_PER_CLIENT waiting (or its address
    MAX_JOBS_PER_HOST), so one client cannot fill the queue for everyone. Gradio has no per-client limit, so
    this wraps the queue's ``push`` (gradio 6.31); the refused client gets "Queue is full" (HTTP 503)."""
    queue = demo._queue
    push = queue.push

    async def limited_push(body, request, username):
        waiting = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
        host = _client_host(request)
        if (body.session_hash and sum(e.session_hash == body.session_hash for e in waiting) >= MAX_JOBS_PER_CLIENT
                or sum(_client_host(e.request) == host for e in waiting) >= MAX_JOBS_PER_HOST):
            return False, f"too many jobs waiting from this client (at most {MAX_JOBS_PER_CLIENT})", "queue_full"
        return await push(body, request, username)

    queue.push = limited_push


def method_status(name: str) -> str | None:
    return svc.method_status(name, DEVICE)


def available_methods() -> list[str]:
    return [m for m in METHODS if method_status(m) is None]


# ----------------------------------------------------------------------------------------------- samples
GROUP_KEYS = list(samples_mod.GROUPS)


@functools.cache
def get_samples() -> list[samples_mod.Sample]:
    """The sample registry, read once per process (on first page load, never at import)."""
    try:
        return samples_mod.list_samples()
    except Exception:  # the page must still come up
        log.exception("sample registry failed")
        return []


def _sample_copy(sample: samples_mod.Sample) -> tuple[list[str], str | None, str]:
    return svc.sample_files(sample, SAMPLE_DIR)


def _group_samples(group: str) -> list[samples_mod.Sample]:
    return [s for s in get_samples() if s.group == group]


def _group_gallery(group: str) -> list[tuple[str, str]]:
    items = []
    for s in _group_samples(group):
        try:
            items.append((_sample_copy(s)[2], f"{s.name} ({len(s.dates)} date{'s' if len(s.dates) > 1 else ''})"))
        except Exception:
            log.exception("sample %s unusable", s.name)
    return items


def about_markdown() -> str:
    nbs = sorted((REPO / "notebooks").glob("*.ipynb"))
    space = os.environ.get("SPACE_ID")
    links = "\n".join(f"- [{nb.stem}]({f'https://huggingface.co/spaces/{space}/blob/main/' if space else ''}"
                      f"notebooks/{nb.name})" for nb in nbs) or "The notebooks live in `notebooks/` of the repository."
    return svc.about_markdown(cloudrm.__version__, {m: method_status(m) for m in METHODS}, links, MAX_SIDE, MAX_DATES)


# ----------------------------------------------------------------------------------------------- events
@_gpu
def api_remove_clouds(images, method, weights=None, sampler=None, steps=None, inr=None, seed=0, reference=None,
                      progress=gr.Progress()):
    """The output PNG and the metrics of one method on 1-3 dates (parameters: see remove_clouds_geotiff)."""
    return _remove(images, method, weights, sampler, steps, inr, seed, reference, progress)[:2]


@_gpu
def api_remove_clouds_geotiff(images, method, weights=None, sampler=None, steps=None, inr=None, seed=0,
                              reference=None, progress=gr.Progress()):
    """Remove clouds from 1-3 dates of one place with one method.

    Parameters:
        images: 1-3 cloudy dates of one place (PNG, JPEG, TIFF or GeoTIFF), all the same size.
        method: identity, median, pixel-cr, idf-cr or diffcr.
        weights: a bundled weights variant (rice1, rice2, sen2); None for the method's default.
        sampler: dpmpp, ddim or ddpm for the diffusion methods; None for the method's default.
        steps: sampler steps 1-50; None for the method's default (diffcr 20, idf-cr 50).
        inr: IDF-CR's INR K (1, 2 or 3); None for the default (3).
        seed: the seed of the per-request random generator, 0 to 4294967295.
        reference: optional cloud-free image of the same place and size, for PSNR, SSIM and RMSE.
    Returns:
        The output PNG (what `python -m cloudrm remove` writes), the metrics psnr, ssim, rmse, niqe, brisque,
        seconds (null where not computable), and the georeferenced GeoTIFF output for a GeoTIFF input (else null).
    """
    return _remove(images, method, weights, sampler, steps, inr, seed, reference, progress)

def _remove(images, method, weights, sampler, steps, inr, seed, reference, progress):
    with _user_errors():  # options first: no file is touched and no user text is echoed when they are wrong
        svc.check_choice(method, METHODS, "method")
        svc.parse_options(sampler, steps, inr), svc.parse_seed(seed), svc.weights_spec("diffcr", weights)
    paths, ref_path = _check_inputs(images, reference)
    with _user_errors(paths + ([ref_path] if ref_path else [])):
        return cmp.run_one(paths, STORE.new(), method=method, weights=weights, sampler=sampler, steps=steps,
                           inr=inr, seed=seed, reference=ref_path, device=DEVICE, tile=TILE, overlap=OVERLAP,
                           progress=lambda i, n: progress((i, n), desc=str(method)))


@_gpu
def run_compare(dates_files, reference_file, methods, diffcr_sampler, diffcr_steps, idf_sampler, idf_steps, inr,
                variant, seed, unc_samples, bands, slider_choice, progress=gr.Progress()):
    """The UI's multi-method comparison (private)."""
    paths, ref_path = _check_inputs(dates_files, reference_file)
    with _user_errors(paths + ([ref_path] if ref_path else []), ui=True):
        c = cmp.compare(paths, ref_path, methods or [], STORE.new(), weights=variant, seed=seed,
                        options={"diffcr": {"sampler": diffcr_sampler, "steps": diffcr_steps},
                                 "idf-cr": {"sampler": idf_sampler, "steps": idf_steps, "inr": inr}},
                        uncertainty_samples=int(unc_samples or 0), bands=bands, device=DEVICE, tile=TILE,
                        overlap=OVERLAP, progress=lambda f, d: progress(f, desc=d))
    pick = slider_choice if slider_choice in c.outputs else list(c.outputs)[-1]
    notes = ([c.geo] if c.geo else []) + list(dict.fromkeys(c.notes))
    if reference_file is None:
        notes.append("no reference given: PSNR, SSIM and RMSE need one")
    if not c.maps:
        notes.append("maps appear for Pixel-CR / IDF-CR (cloud attention) and, with uncertainty samples ≥ 2, "
                     "for DiffCR / IDF-CR")
    return (c.gallery, gr.update(choices=list(c.outputs), value=pick), (c.before, c.outputs[pick]),
            gr.update(value=c.maps, visible=bool(c.maps)), pd.DataFrame(c.rows, columns=cmp.METRIC_COLUMNS),
            c.downloads, "\n".join(f"- {n}" for n in notes), {"before": c.before, "outputs": c.outputs})


def pick_slider(choice, state):
    if not state or choice not in (state.get("outputs") or {}):
        return gr.update()
    return (state["before"], state["outputs"][choice])


def pick_quality(choice):
    """The steps sliders for a speed/detail preset (``svc.QUALITY_PRESETS``; an unknown choice: the defaults)."""
    steps = svc.QUALITY_PRESETS.get(choice, svc.QUALITY_PRESETS["default"])
    return gr.update(value=steps["diffcr"]), gr.update(value=steps["idf-cr"])


def check_uploads(files, reference):
    """As soon as files arrive: thumbnails of the dates and one line saying what is wrong (or what was read)."""
    paths, ref = _file_paths(files), _file_paths(reference)
    if not paths:
        return [], ""
    try:
        _check_inputs(paths, ref or None)
        with _user_errors(paths + ref, ui=True):
            rasters = read_dates(paths)
            if ref:
                io.read_reference(ref[0], rasters[0])
    except gr.Error as exc:
        return [], f"⚠️ {exc.message}"
    work = STORE.new()
    previews = [(cmp.preview_png(r, work / f"preview{i + 1}.png"), f"date {i + 1}: {Path(p).name}")
                for i, (r, p) in enumerate(zip(rasters, paths))]
    h, w = rasters[0].shape
    geo = cmp.geo_summary(rasters[0])
    msg = f"✅ {len(paths)} date{'s' if len(paths) > 1 else ''}, {w}x{h} px" + (", with a reference" if ref else "")
    return previews, msg + (f"  \n{geo}" if geo else "")


def refresh_page():
    """On page load: methods whose weights are present now, the samples, the About text."""
    avail = available_methods()
    missing = [f"`{m}` ({method_status(m)})" for m in METHODS if m not in avail]
    note = ("Not available now: " + "; ".join(missing) + ". They appear here as soon as their weights are in place."
            if missing else "")
    return ([gr.update(choices=avail, value=svc.preset_methods(None, avail)), note]
            + [gr.update(value=items, visible=bool(items)) for items in map(_group_gallery, GROUP_KEYS)]
            + [about_markdown(), "\n".join(f"- {n}" for n in samples_mod.notices())])


def make_sample_handler(group: str):
    def select_sample(evt: gr.SelectData):
        items = _group_samples(group)
        idx = None if evt is None or evt.index is None else evt.index if isinstance(evt.index, int) else evt.index[0]
        if idx is None or not 0 <= idx < len(items):
            return (gr.update(),) * 5
        s = items[idx]
        with _user_errors(s.dates):
            dates, ref, _ = _sample_copy(s)
        variant = samples_mod.GROUP_VARIANT.get(s.group, "default")
        methods = svc.preset_methods(s.group, available_methods())
        msg = (f"Sample **{s.name}** ({samples_mod.GROUPS.get(s.group, s.group)}, {s.source}); weights variant "
               f"set to `{variant}`, methods to {', '.join(methods)}."
               + ("\n\n" if s.notes else "") + "\n".join(f"- {n}" for n in s.notes))  # e.g. which dates were made
        return dates, ref, variant, gr.update(value=methods), msg
    return select_sample


# ----------------------------------------------------------------------------------------------- layout
def build_demo() -> gr.Blocks:
    """The whole page; queue configured. Launch with ``demo.launch(**LAUNCH_KWARGS)``."""
    allow_paths = svc.allow_weight_paths()
    with gr.Blocks(title="cloudrm: remove clouds from satellite images", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# ☁️ cloudrm: remove clouds from satellite images\n"
                    "Pick a sample or upload 1-3 cloudy dates of one place, choose methods, and compare them "
                    "with the cloudy input and the cloud-free reference.", elem_id="title")
        with gr.Tabs():
            with gr.Tab("Remove clouds", id="main"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        gr.Markdown("### 1. Pick a sample")
                        sample_galleries = [gr.Gallery(
                            label=samples_mod.GROUPS[g], columns=4, height="auto", allow_preview=False,
                            object_fit="cover", format="png", buttons=[], interactive=False,
                            elem_id=f"samples_{g.lower().replace('-', '')}", elem_classes=["sample-gallery"])
                            for g in GROUP_KEYS]
                        sample_note = gr.Markdown(elem_id="sample_note")
                        gr.Markdown("### 2. … or upload your own")
                        dates = gr.File(label=f"Cloudy date(s): 1-{MAX_DATES} images of one place, same size "
                                              f"(PNG, JPEG, TIFF, GeoTIFF; up to {MAX_SIDE} px a side)",
                                        file_count="multiple", file_types=FILE_TYPES, type="filepath",
                                        elem_id="dates")
                        reference = gr.File(label="Cloud-free reference (optional, for PSNR/SSIM/RMSE)",
                                            file_count="single", file_types=FILE_TYPES, type="filepath",
                                            elem_id="reference", height=130)
                        input_status = gr.Markdown(elem_id="input_status")
                        input_preview = gr.Gallery(label="Input preview", columns=3, height="auto", format="png",
                                                   allow_preview=False, buttons=[], interactive=False,
                                                   elem_id="input_preview")
                        gr.Markdown("### 3. Methods")
                        methods = gr.CheckboxGroup(choices=["identity", "median"], value=["median"],
                                                   label="Methods to compare", elem_id="methods")
                        methods_note = gr.Markdown(elem_id="methods_note")
                        quality = gr.Radio([("Fast", "fast"), ("Default", "default"), ("Detailed", "detailed")],
                                           value="default", label="Speed or detail (sets the DiffCR and IDF-CR "
                                           "steps under Advanced settings)", elem_id="quality")
                        with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                            with gr.Row():
                                diffcr_sampler = gr.Radio(SAMPLERS, value="dpmpp", label="DiffCR sampler",
                                                          elem_id="diffcr_sampler")
                                diffcr_steps = gr.Slider(1, 50, value=20, step=1, label="DiffCR steps (1 = one "
                                                         "direct prediction)", elem_id="diffcr_steps")
                            with gr.Row():
                                idf_sampler = gr.Radio(SAMPLERS, value="ddpm", label="IDF-CR sampler",
                                                       elem_id="idf_sampler")
                                idf_steps = gr.Slider(1, 50, value=50, step=1, label="IDF-CR steps",
                                                      elem_id="idf_steps")
                            inr = gr.Radio([1, 2, 3], value=3, label="IDF-CR INR K (passes per batch in training)",
                                           elem_id="inr")
                            variant = gr.Dropdown(VARIANT_CHOICES, value="default", allow_custom_value=allow_paths,
                                                  label="Weights variant (preset by the sample's group"
                                                        + ("; or a weights folder / hub repo id)" if allow_paths
                                                           else ")"), elem_id="variant")
                            with gr.Row():
                                seed = gr.Number(value=0, precision=0, minimum=0, maximum=svc.SEED_MAX,
                                                 label="Seed", elem_id="seed")
                                unc_samples = gr.Slider(0, MAX_UNCERTAINTY_SAMPLES, value=0, step=1,
                                                        label="Uncertainty samples (0 = off; ≥ 2 seeds for a map)",
                                                        elem_id="unc_samples")
                            bands = gr.Textbox(label="Bands of a multiband GeoTIFF as R,G,B (1-based indexes or "
                                                     "names, e.g. 4,3,2 or B04,B03,B02; empty = from the file)",
                                               placeholder="4,3,2", max_length=64, elem_id="bands")
                        run = gr.Button("Remove clouds", variant="primary", elem_id="run")
                    with gr.Column(scale=3, min_width=420):
                        results = gr.Gallery(label="Cloudy date(s) | each method | reference", columns=3,
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
                metrics_df = gr.Dataframe(headers=cmp.METRIC_COLUMNS, interactive=False, wrap=True, max_height=300,
                                          column_widths=["9%", "33%", "9%", "8%", "8%", "8%", "9%", "8%"],
                                          label="Metrics (PSNR/SSIM/RMSE need a reference; NIQE/BRISQUE: "
                                                "no-reference, lower usually looks more natural)", elem_id="metrics")
                maps = gr.Gallery(label="Maps: Pixel-CR cloud attention, uncertainty (std over seeds)", columns=4,
                                  height="auto", format="png", object_fit="contain", buttons=["download", "fullscreen"],
                                  interactive=False, visible=False, elem_id="maps")
                downloads = gr.File(label="Downloads (PNG; GeoTIFF when the input is a GeoTIFF)",
                                    file_count="multiple", interactive=False, elem_id="downloads")
                notes = gr.Markdown(elem_id="notes")
                state = gr.State({})
            with gr.Tab("About", id="about"):
                about = gr.Markdown(elem_id="about")
                sample_notices = gr.Markdown(elem_id="sample_notices")

        # The public API: hidden components, one method per call. gr.api() was tried (6.31): list[FileData]
        # uploads work and forged server paths are refused, but a gr.Progress parameter fails at build time,
        # so API clients would lose progress; these components keep it.
        with gr.Column(visible=False):
            api_in = [gr.File(file_count="multiple", file_types=FILE_TYPES, type="filepath", label="images"),
                      gr.Textbox(value="identity", label="method", max_length=64),
                      gr.Textbox(label="weights", max_length=300), gr.Textbox(label="sampler", max_length=64),
                      gr.Number(value=None, precision=0, label="steps"), gr.Number(value=None, precision=0, label="inr"),
                      gr.Number(value=0, precision=0, label="seed"),
                      gr.File(file_types=FILE_TYPES, type="filepath", label="reference")]
            api_out = [gr.Image(type="filepath", format="png", label="output"), gr.JSON(label="metrics")]
            api_button, api_geo_button = gr.Button("api"), gr.Button("api-geotiff")
        api_button.click(api_remove_clouds, api_in, api_out, api_name="remove_clouds", concurrency_id="model",
                         concurrency_limit=1)
        api_geo_button.click(api_remove_clouds_geotiff, api_in, api_out + [gr.File(label="geotiff", visible=False)],
                             api_name="remove_clouds_geotiff", concurrency_id="model", concurrency_limit=1)
        run.click(run_compare,
                  [dates, reference, methods, diffcr_sampler, diffcr_steps, idf_sampler, idf_steps, inr, variant,
                   seed, unc_samples, bands, slider_method],
                  [results, slider_method, slider, maps, metrics_df, downloads, notes, state],
                  api_visibility="private", concurrency_id="model", concurrency_limit=1, show_progress_on=[results])
        # everything else answers at once, outside the model queue
        fast = dict(api_visibility="private", queue=False, show_progress="hidden")
        slider_method.change(pick_slider, [slider_method, state], slider, **fast)
        quality.change(pick_quality, quality, [diffcr_steps, idf_steps], **fast)
        for trigger in (dates.change, reference.change):
            trigger(check_uploads, [dates, reference], [input_preview, input_status], **fast)
        for g, gal in zip(GROUP_KEYS, sample_galleries):
            gal.select(make_sample_handler(g), None, [dates, reference, variant, methods, sample_note], **fast)
        demo.load(refresh_page, None, [methods, methods_note, *sample_galleries, about, sample_notices], **fast)
    demo.queue(**QUEUE_KWARGS)
    _cap_jobs_per_client(demo)
    STORE.start()
    return demo


if os.environ.get("SPACES_ZERO_GPU"):  # ZeroGPU wants models on CUDA at import
    for _name in svc.DEEP:
        method_status(_name)

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**LAUNCH_KWARGS)
