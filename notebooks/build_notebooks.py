#!/usr/bin/env python
"""Generate (and optionally execute) the four teaching notebooks of cloudrm.

The notebooks are written here as lists of markdown and code cells, so they are easy to review and edit;
the ``.ipynb`` files are generated from this file. Edit this file, never the ``.ipynb`` files by hand
(``tests/test_notebooks.py`` checks that the two agree).

Usage (from the repository root)::

    python notebooks/build_notebooks.py                       # (re)write the four .ipynb files, no outputs
    python notebooks/build_notebooks.py --execute             # full run, fresh kernel each, outputs saved in place
    python notebooks/build_notebooks.py --execute --smoke --out /tmp/nb-smoke   # CI-sized run, written elsewhere
    python notebooks/build_notebooks.py --execute --only 02   # one notebook (name prefix)

``--execute`` runs each notebook top to bottom in a fresh ``python3`` kernel (nbclient), fills the run time
measured by its last cell into the line at its top, turns tqdm's progress widgets into their final text line
(readable on GitHub), checks that no output holds a home-directory path or the user name, and writes the file.
A notebook that fails is written next to its target as ``NAME.failed.ipynb`` and the command exits non-zero;
the committed file is left untouched.
"""
from __future__ import annotations

import argparse
import getpass
import html
import os
import re
import sys
import time
from pathlib import Path

import nbformat

NB_DIR = Path(__file__).resolve().parent
REPO = NB_DIR.parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
RUNTIME_PREFIX = "**Run time:**"
RUNTIME_PENDING = (f"{RUNTIME_PREFIX} not measured yet; `python notebooks/build_notebooks.py --execute` runs the "
                   "notebook and writes the measured time here.")
RUNTIME_RE = re.compile(r"Run time of this notebook: (?P<wall>[\d.]+) s wall-clock, (?P<cpu>[\d.]+) s CPU "
                        r"\((?P<mode>\w+) mode, (?P<cores>\d+) CPU cores, torch threads (?P<threads>\d+), "
                        r"GPU (?P<gpu>[^)]*)\)")


def md(text: str) -> tuple[str, str]:
    return ("markdown", text.strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", text.strip("\n"))


# ============================================================================================ shared cells
HOW_TO_RUN = """
**How to run.** From a checkout: `pip install -r requirements.txt`, then open this notebook in Jupyter (its folder
is the working directory). Data comes from `CLOUDRM_DATA` (default: `../../shared/data` relative to this notebook,
the repository's sibling `shared/data`); without it every section says so in one line and continues on built-in
synthetic samples. `CLOUDRM_SMOKE=1` shrinks sizes, iterations and steps (what CI runs); the numbers and pictures
stored in this file come from a full run. Everything runs on a CPU; nothing needs the network.
"""

SETUP = r'''
# Setup: the same first cell in every notebook
import json, os, resource, sys, tempfile, time, warnings
from pathlib import Path

_T0 = time.perf_counter()
_CPU0 = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
            for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
SMOKE = os.environ.get("CLOUDRM_SMOKE") == "1"   # CI's small mode: tiny sizes, few iterations and steps
os.environ.setdefault("HF_HUB_OFFLINE", "1")      # nothing in these notebooks needs the network
for _module in ("torch", "diffusers", "accelerate", "huggingface_hub", "skimage", "rasterio", "tqdm"):
    warnings.filterwarnings("ignore", module=_module)
warnings.filterwarnings("ignore", category=FutureWarning)

NB_DIR = Path.cwd()
REPO = next((p for p in (NB_DIR, *NB_DIR.parents) if (p / "cloudrm" / "__init__.py").is_file()), NB_DIR.parent)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))   # a plain checkout works without `pip install -e .`


def find_data_root():
    """$CLOUDRM_DATA, else ../../shared/data beside this notebook; None (with one line) when absent."""
    env = os.environ.get("CLOUDRM_DATA")
    candidates = [Path(env), REPO / env] if env else [NB_DIR / ".." / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    print(f"No data root ({'$CLOUDRM_DATA' if env else '../../shared/data'} not found): "
          "the sections below use built-in synthetic samples instead.")
    return None


DATA = find_data_root()
if DATA is not None:
    os.environ["CLOUDRM_DATA"] = str(DATA)   # the package (samples, training tasks) reads it from here

import numpy as np
import torch
import matplotlib.pyplot as plt
from IPython.display import Image as _IPImage, display
from tqdm.auto import tqdm

import cloudrm

torch.manual_seed(0)
plt.rcParams.update({"figure.dpi": 72, "axes.grid": True, "grid.alpha": 0.3, "image.interpolation": "nearest"})
WORK = Path(tempfile.mkdtemp(prefix="cloudrm-nb-"))   # scratch space (checkpoints, exports), outside the repository
print(f"cloudrm {cloudrm.__version__} | torch {torch.__version__}, {torch.get_num_threads()} threads | "
      f"{'SMOKE' if SMOKE else 'full'} mode | data: {'the shared data root' if DATA else 'built-in samples'}")
'''

HELPERS = r'''
# Small display helpers (no method code: models, losses and samplers all come from the package)
from io import BytesIO


def to_hwc(img):
    """(C,H,W) or (H,W) array/tensor in [0,1] -> something imshow understands."""
    a = img.detach().float().cpu().numpy() if torch.is_tensor(img) else np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
    return a


def show_jpeg(fig, quality=90):
    """Show a figure of pictures as a JPEG (photographs in PNG would make the notebook several MB)."""
    buf = BytesIO()
    fig.savefig(buf, format="jpeg", dpi=72, bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(_IPImage(data=buf.getvalue(), format="jpeg"))


def pictures(rows, titles=None, row_labels=None, size=2.4, suptitle=None):
    """A grid of images. Each cell: an array, None (blank) or (array, dict(cmap=, vmin=, vmax=, cbar=label))."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if titles is not None and i == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=9)
            cell = row[j] if j < len(row) else None
            if cell is None:
                continue
            img, opts = cell if isinstance(cell, tuple) else (cell, {})
            a = to_hwc(img)
            im = ax.imshow(a if a.ndim == 3 else a, cmap=opts.get("cmap", "gray"),
                           vmin=opts.get("vmin", 0), vmax=opts.get("vmax", 1))
            if opts.get("cbar"):
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                cb.set_label(opts["cbar"], fontsize=8)
            if opts.get("title"):
                ax.set_title(opts["title"], fontsize=8)
        if row_labels is not None:
            axes[i, 0].text(-0.06, 0.5, row_labels[i], transform=axes[i, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    show_jpeg(fig)


def rel(path):
    """A path for printing: relative to the data root, the repository or the scratch folder (never a home path)."""
    p = Path(path).resolve()
    for base, name in ((DATA, "$CLOUDRM_DATA"), (WORK, "<scratch>"), (REPO, "<repo>")):
        if base is not None:
            try:
                return f"{name}/{p.relative_to(Path(base).resolve())}"
            except ValueError:
                pass
    return p.name


def center_crop(a, size):
    """The central size x size window of (..., H, W) data (a no-op when the image is not larger)."""
    h, w = a.shape[-2:]
    y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return a[..., y:y + size, x:x + size]


def shipped(method, variant, parts):
    """The bundled weights folder when it holds every part, else None (saying so in one line)."""
    from cloudrm import weights
    folder = weights.bundled_dir(method, variant)
    missing = [p for p in parts if not (folder / p / "config.json").is_file()]
    if not (folder / "cloudrm.json").is_file() or missing:
        print(f"Shipped {method} weights '{variant}' are not in this checkout ({rel(folder)} lacks "
              f"{', '.join(missing) if missing else 'cloudrm.json'}); continuing without them.")
        return None
    return folder


def builtin_data_root(n_clear=24, n_pairs=16, n_scenes=3, size=128):
    """A tiny data root of synthetic scenes, used only when no real data is present: CLEAR/ (clear images),
    SYNTH_PAIRS/{cloud,label}/ (the RICE layout) and SYNTH_SCENES/<scene>/cloudy_*.png + clear.png (3 dates)."""
    from cloudrm import io as cio, synth
    root = WORK / "builtin-data"
    if (root / "SYNTH_SCENES").is_dir():
        return root
    rng = np.random.default_rng(0)
    for sub in ("CLEAR", "SYNTH_PAIRS/cloud", "SYNTH_PAIRS/label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_clear):
        cio.write_image(root / "CLEAR" / f"{i}.png", synth.demo_scene(1000 + i, size))
    for i in range(n_pairs):
        clear = synth.demo_scene(2000 + i, size)
        cloudy, _ = synth.add_clouds(clear, rng)
        cio.write_image(root / "SYNTH_PAIRS" / "cloud" / f"{i}.png", cloudy)
        cio.write_image(root / "SYNTH_PAIRS" / "label" / f"{i}.png", clear)
    for i in range(n_scenes):
        clear = synth.demo_scene(3000 + i, size)
        dates, _ = synth.multi_temporal(clear, 3, rng)
        (root / "SYNTH_SCENES" / f"scene{i}").mkdir(parents=True, exist_ok=True)
        for k, d in enumerate(dates):
            cio.write_image(root / "SYNTH_SCENES" / f"scene{i}" / f"cloudy_{k}.png", d)
        cio.write_image(root / "SYNTH_SCENES" / f"scene{i}" / "clear.png", clear)
    return root
'''

FINAL = r'''
# Run time of this notebook (the line at the top of the notebook is filled from this output)
_ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
_cpu = sum(r.ru_utime + r.ru_stime for r in _ru) - _CPU0
_wall = time.perf_counter() - _T0
_gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"Run time of this notebook: {_wall:.0f} s wall-clock, {_cpu:.0f} s CPU "
      f"({'smoke' if SMOKE else 'full'} mode, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
      f"GPU {_gpu})")
'''


def header(title: str, intro: str) -> tuple[str, str]:
    return md(f"# {title}\n\n{intro.strip()}\n\n{RUNTIME_PENDING}\n\n{HOW_TO_RUN.strip()}")


def common_cells() -> list[tuple[str, str]]:
    return [code(SETUP), code(HELPERS)]


# ============================================================================================ notebook 1
def nb01() -> list[tuple[str, str]]:
    return [
        header("1 · Data and clouds", """
Every cloud-removal model learns from pairs: cloudy input(s) and the clear image of the same place. This notebook
looks at the data cloudrm uses and at the synthetic clouds it draws when real pairs run out:

1. the folder layouts (RICE and Sen2_MTC) and what one sample looks like;
2. reading a multiband GeoTIFF: band order, reflectance scaling and the display stretch;
3. the synthetic cloud generator (haze, thick clouds, shadows, multi-date stacks) and the masks it returns;
4. what a training batch contains (`datasets.TrainMixture`);
5. the train/validation split behind the shipped weights;
6. the built-in samples used when no data is present.
"""),
        *common_cells(),
        code(r'''
import pandas as pd
from cloudrm import datasets, io, metrics, synth

ROOT = DATA if DATA is not None else builtin_data_root()
RICE = [n for n in ("RICE1", "RICE2") if (ROOT / n / "cloud").is_dir()] or ["SYNTH_PAIRS"]
SCENE_SETS = [n for n in ("Sen2_MTC_New_fig", "Sen2_MTC_Old_fig") if (ROOT / n).is_dir()] or ["SYNTH_SCENES"]
SIZE = 96 if SMOKE else 256           # picture size used in this notebook
N_SHOW = 1 if SMOKE else 3            # examples per dataset
'''),
        md("""
## 1. The layouts

The data root holds one folder per dataset. `datasets.detect_layout` recognises three layouts:

| layout | files | dates |
|---|---|---|
| `rice` | `cloud/ID.png` + `label/ID.png` (RICE1: thin clouds over Google Earth imagery; RICE2: thick clouds and shadows over Landsat 8) | 1 |
| `sen2mtc` | `Sen2_MTC/<TILE>/cloud/<NAME>_{0,1,2}.tif` + `cloudless/<NAME>.tif`, 4-band uint16 GeoTIFF (R, G, B, NIR = B04, B03, B02, B08; reflectance × 10000), tile lists `train.txt`/`val.txt`/`test.txt` | 3 |
| `scenes` | `<SCENE>/cloudy_*.png` + `clear.png`, one folder per place (the Sentinel-2 crops here are in this form) | 1–3 |
"""),
        code(r'''
rows = []
for d in sorted(p for p in ROOT.iterdir() if p.is_dir()):
    try:
        layout = datasets.detect_layout(d)
    except cloudrm.CloudRMError:
        layout = "(other)"
    n = sum(1 for f in d.rglob("*") if f.suffix.lower() in io.IMAGE_EXTS)
    rows.append({"folder": d.name, "layout": layout, "image files": n})
display(pd.DataFrame(rows).set_index("folder"))
'''),
        md("""
**RICE** pairs a cloudy image with a clear one taken shortly before or after. The difference between the two is a
usable cloud map; Pixel-CR (notebook 3) learns to predict it with its cloudy attention. The map below is
`datasets.real_cloud_mask`: the channel-mean absolute difference, binarised at 0.04.
"""),
        code(r'''
rows, labels = [], []
for name in RICE:
    pairs = datasets.rice_pairs(ROOT / name)
    r = io.read_image(pairs[0][1])
    print(f"{name}: {len(pairs)} pairs; e.g. {rel(pairs[0][1])} + {rel(pairs[0][2])}: "
          f"{r.shape[1]}x{r.shape[0]} px, {r.dtype}, bands {r.bands}")
    for n, c, l in pairs[::max(1, len(pairs) // N_SHOW)][:N_SHOW]:
        cloudy, label = (center_crop(io.to_display(io.to_rgb(io.read_image(p))), SIZE) for p in (c, l))
        mask = datasets.real_cloud_mask(cloudy, label)
        rows.append([cloudy, label, (mask, {"cbar": "cloud (1) / clear (0)"})])
        labels.append(f"{name} #{n}")
pictures(rows, titles=["cloudy input", "label (clear)", "cloud mask"], row_labels=labels)
'''),
        md("""
**Sen2_MTC** (the DiffCR paper's data) gives three cloudy Sentinel-2 acquisitions of one tile and a cloud-free one.
The crops in the data root come from the paper's figures, stored as `scenes`: clouds move between dates, so most
of the ground is visible in at least one of them — that is what a multi-temporal model exploits.
"""),
        code(r'''
rows, labels = [], []
for s in SCENE_SETS:
    scenes = datasets.scene_folders(ROOT / s)
    print(f"{s}: {len(scenes)} scenes ({', '.join(n for n, _, _ in scenes)})")
    for name, dates, clear in scenes[:N_SHOW if SMOKE else 2]:
        imgs = [center_crop(io.to_display(io.to_rgb(io.read_image(p))), SIZE) for p in [*dates, clear]]
        rows.append(imgs)
        labels.append(f"{s.replace('_fig', '')}\n{name}")
pictures(rows, titles=["date 1", "date 2", "date 3", "clear (target)"], row_labels=labels)
'''),
        md("""
## 2. Reading a multiband GeoTIFF

The official Sen2_MTC files are 4-band `uint16` GeoTIFFs storing `DN = 10000 × reflectance`. We write a miniature
copy of that layout (from the clear scene above plus synthetic clouds, and a made-up NIR band for illustration),
then read it back the way every cloudrm entry point does (`io.read_image`).
"""),
        code(r'''
import rasterio
from rasterio.transform import from_origin

scene_name, scene_dates, scene_clear = datasets.scene_folders(ROOT / SCENE_SETS[0])[0]
clear_rgb = center_crop(io.to_display(io.to_rgb(io.read_image(scene_clear))), SIZE)
nir = np.clip(0.25 + 0.6 * clear_rgb[1] - 0.2 * clear_rgb[0], 0, 1)          # illustration only
clear4 = np.concatenate([clear_rgb, nir[None]])                               # (4, H, W) display values


def write_sentinel2(path, display4, nodata_corner=False):
    """Display values in [0,1] -> Sentinel-2 style file: reflectance = display / gain, DN = 10000 x reflectance."""
    dn = np.round(np.clip(display4 / io.REFLECTANCE_GAIN, 0, 1) * 10000).astype("uint16")
    dn = np.maximum(dn, 1)                 # 0 is the nodata value
    if nodata_corner:
        dn[:, :12, :12] = 0                # a corner outside the swath
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=4, dtype="uint16",
                   crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10), nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn)
        for i, band in enumerate(io.SENTINEL2_RGBN, 1):
            dst.set_band_description(i, band)


MINI = WORK / "Sen2_MTC_mini"
tile = MINI / "Sen2_MTC" / "T33TEST"
rng = np.random.default_rng(0)
stack, stack_masks = synth.multi_temporal(clear4, 3, rng)
write_sentinel2(tile / "cloudless" / "T33TEST_0.tif", clear4, nodata_corner=True)
for k in range(3):
    write_sentinel2(tile / "cloud" / f"T33TEST_0_{k}.tif", stack[k], nodata_corner=True)
for p in sorted(MINI.rglob("*.tif")):
    print(rel(p))
print("layout:", datasets.detect_layout(MINI), "| items:", [(n, len(d)) for n, d, _ in datasets.sen2mtc_items(MINI)])
'''),
        code(r'''
tif = tile / "cloudless" / "T33TEST_0.tif"
info = io.tiff_info(tif)
r = io.read_image(tif)
print(f"file: {info['count']} bands {info['descriptions']}, {info['dtype']}, {info['width']}x{info['height']} px, "
      f"CRS {info['crs']}, pixel {info['transform'].a:g} m, nodata {info['nodata']}")
print(f"Raster: bands {r.bands}, data = file / {r.scale:g} (reflectance, {r.data.min():.3f}..{r.data.max():.3f}), "
      f"display gain {r.gain:g}, georeferenced: {r.is_geo}, invalid (nodata) pixels: {(~r.valid).sum()}")
with rasterio.open(tif) as src:
    dn = src.read()
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for band, values, color in zip(io.SENTINEL2_RGBN, dn, ["tab:red", "tab:green", "tab:blue", "tab:purple"]):
    v = values[values > 0]
    axes[0].hist(v, bins=60, histtype="step", color=color, label=band)
    axes[1].hist(v / 10000 * io.REFLECTANCE_GAIN, bins=60, histtype="step", color=color, label=band)
axes[0].set(xlabel="file value (DN = 10000 x reflectance)", ylabel="pixels", title="what the file stores")
axes[1].axvline(1.0, color="k", ls="--", lw=1)
axes[1].set(xlabel=f"display value = reflectance x {io.REFLECTANCE_GAIN:g} (clipped to 1 above the dashed line)",
            ylabel="pixels", title="what the models see")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
'''),
        md("""
**Band order and scaling.** 3- and 4-band files are read as R, G, B[, NIR] (`B04, B03, B02, B08`, the Sen2_MTC
order); other band counts need `--bands` unless their band descriptions name them. Integer TIFFs are divided by
10000 into reflectance. Models see *display* values: `clip(reflectance × 3, 0, 1)` — one fixed,
scene-wide gain, so tiles of a large scene share it and writing a GeoTIFF can invert it exactly. A percentile
stretch (`io.stretch`) is only for looking at raw data: it differs per image.
"""),
        code(r'''
display_rgb = io.to_display(io.to_rgb(r))
false_colour = io.to_display(io.read_image(tif, bands="B08,B04,B03"))      # NIR, red, green
pictures([[np.clip(r.data[:3], 0, 1), display_rgb, io.stretch(r.data[:3]), false_colour,
           (r.valid.astype(np.float32), {"cmap": "viridis", "cbar": "valid (1) / nodata (0)"})]],
         titles=["reflectance as is", f"display (x {io.REFLECTANCE_GAIN:g}, clipped)", "2-98 % stretch",
                 "false colour (NIR, R, G)", "valid pixels"])
'''),
        md("""
Why a fixed gain and not a per-image stretch: a per-image stretch hides radiometric errors. The official DiffCR
evaluation min-max stretches every output and target before scoring. Take an "output" that is the clear image
but 25 % too dark — a real error a user would see:
"""),
        code(r'''
too_dark = 0.75 * display_rgb
minmax = lambda a: (a - a.min()) / (a.max() - a.min())   # noqa: E731
print(f"PSNR(clear, 25 % too dark), display values:          {metrics.psnr(display_rgb, too_dark):6.2f} dB")
print(f"PSNR(clear, 25 % too dark), each min-max stretched:  {metrics.psnr(minmax(display_rgb), minmax(too_dark)):6.2f} dB"
      "  <- the error is gone")
'''),
        md("Real GeoTIFFs from the data root (small test files): `tiff_info` reads the header only; `read_image` "
           "refuses what a method cannot use, with one line naming the file."),
        code(r'''
geo = sorted((ROOT / "geotiff").glob("*.tif*")) if (ROOT / "geotiff").is_dir() else []
if not geo:
    print("No GeoTIFF folder in the data root; skipping (the synthetic Sentinel-2 file above shows the same reading).")
for f in geo:
    info = io.tiff_info(f)
    print(f"{f.name}: {info['count']} band(s), {info['dtype']}, {info['width']}x{info['height']} px, CRS {info['crs']}")
    try:
        r2 = io.read_image(f)
        print(f"   read as bands {r2.bands}, scale 1/{r2.scale:g}, gain {r2.gain:g}, notes {r2.notes}")
    except cloudrm.CloudRMError as exc:
        print(f"   refused: {str(exc).replace(str(f), f.name)}")
'''),
        md("""
## 3. Synthetic clouds

Real multi-date pairs are scarce, so DiffCR also learns from clear images with clouds drawn by `cloudrm.synth`.
The generator is built from *fractal noise* (1/f^β spectra): large β gives smooth billowy fields (cumulus), an
anisotropic spectrum gives streaks (cirrus). From it:

* `thick_cloud_alpha`: opacity of thick clouds — the noise thresholded at the quantile that gives the requested
  coverage, with a soft ramp at the edges;
* `haze_transmission`: how much ground shows through thin cloud (1 = clear);
* `add_clouds`: haze (ground × t + airlight × (1 − t)), then shadows (the cloud opacity shifted along a sun
  direction, blurred, darkening the ground where there is no cloud), then the cloud body. It returns the cloudy
  image **and a mask** in [0, 1]: how much each pixel is degraded.
"""),
        code(r'''
h = w = SIZE
rng = np.random.default_rng(1)
n_iso, n_smooth = synth.fractal_noise(rng, h, w, beta=2.2), synth.fractal_noise(rng, h, w, beta=4.0)
n_streak = synth.fractal_noise(rng, h, w, beta=3.0, anisotropy=6, angle=0.5)
alphas = {cov: synth.thick_cloud_alpha(np.random.default_rng(2), h, w, cov) for cov in (0.2, 0.5, 0.8)}
haze_t = synth.haze_transmission(np.random.default_rng(3), h, w, strength=0.7)
noise_opts = {"cmap": "RdBu_r", "vmin": -3, "vmax": 3, "cbar": "noise (std units)"}
pictures([[(n_iso, {**noise_opts, "title": "beta 2.2"}), (n_smooth, {**noise_opts, "title": "beta 4.0"}),
           (n_streak, {**noise_opts, "title": "beta 3, anisotropy 6"}),
           (haze_t, {"cbar": "transmission", "title": "haze transmission (strength 0.7)"})],
          [(a, {"cbar": "opacity", "title": f"thick, coverage {cov:.0%}: measured {np.mean(a > 0.5):.0%}"})
           for cov, a in alphas.items()]], size=2.6)
'''),
        code(r'''
clear = clear_rgb
configs = {
    "thin haze only": synth.CloudConfig(p_thick=0.0, p_haze=1.0),
    "thick, no shadow": synth.CloudConfig(p_thick=1.0, p_haze=0.0, p_shadow=0.0, coverage=(0.3, 0.4)),
    "thick + shadow": synth.CloudConfig(p_thick=1.0, p_haze=0.0, p_shadow=1.0, coverage=(0.3, 0.4)),
    "default mixture": synth.CloudConfig(),
}
rows = []
for k, (name, cfg) in enumerate(configs.items()):
    seed = 10 + k
    cloudy, mask = synth.add_clouds(clear, np.random.default_rng(seed), cfg)
    while mask.mean() < 0.1:               # show a draw with visible clouds (the default sometimes draws none)
        seed += 100
        cloudy, mask = synth.add_clouds(clear, np.random.default_rng(seed), cfg)
    rows.append([clear, cloudy, (mask, {"cbar": "degradation"}), np.abs(cloudy - clear).mean(0) * 3])
pictures(rows, titles=["clear", "cloudy", "mask returned", "|cloudy - clear| x 3"], row_labels=list(configs))
none = np.mean([synth.add_clouds(center_crop(clear, 32), np.random.default_rng(s))[1].max() < 0.05
                for s in range(200)])
print(f"the default mixture leaves a date cloud-free in {none:.0%} of draws (p_thick 0.8, p_haze 0.55)")
'''),
        md("""
**Multi-date stacks.** `synth.multi_temporal` clouds each date independently and changes the clear ground a
little between dates (gain/offset, like phenology or illumination); the target stays the clear image. At least
the first date always has clouds, so no input is a free copy of the target.
"""),
        code(r'''
dates, masks = synth.multi_temporal(clear, 3, np.random.default_rng(5))
clear_somewhere = (masks < 0.1).any(0)
pictures([list(dates) + [clear], [(m, {"cbar": "degradation"}) for m in masks] + [(clear_somewhere.astype(float),
          {"cbar": "clear in >= 1 date"})]],
         titles=["date 1", "date 2", "date 3", "target / where some date is clear"])
print(f"cloud-free (mask < 0.1) per date: {', '.join(f'{np.mean(m < 0.1):.0%}' for m in masks)}; "
      f"in at least one date: {clear_somewhere.mean():.0%}")
'''),
        md("How much cloud does the default mixture produce? Statistics over many draws (64 × 64 px):"),
        code(r'''
n_draws = 30 if SMOKE else 400
small = center_crop(clear, 64)
cover, any_clear = [], []
for i in tqdm(range(n_draws), desc="drawing stacks"):
    _, m = synth.multi_temporal(small, 3, np.random.default_rng(100 + i))
    cover += list((m > 0.5).mean((1, 2)) * 100)
    any_clear.append((m < 0.1).any(0).mean() * 100)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].hist(cover, bins=20, range=(0, 100), color="tab:gray")
axes[0].set(xlabel="cloud cover of one date (% of pixels with mask > 0.5)", ylabel="dates drawn")
axes[1].hist(any_clear, bins=20, range=(0, 100), color="tab:green")
axes[1].set(xlabel="pixels clear (mask < 0.1) in at least one of 3 dates (%)", ylabel="stacks drawn")
fig.tight_layout()
plt.show()
print(f"median cover per date {np.median(cover):.0f} %; a 3-date stack leaves {np.median(any_clear):.0f} % "
      "of the ground clear somewhere (median)")
'''),
        md("Real and synthetic side by side (the first Sentinel-2 scene's clear image, clouded by the generator):"),
        code(r'''
real = [center_crop(io.to_display(io.to_rgb(io.read_image(p))), SIZE) for p in scene_dates]
fake, _ = synth.multi_temporal(clear, 3, np.random.default_rng(7))
pictures([real + [clear], list(fake) + [clear]], titles=["date 1", "date 2", "date 3", "clear"],
         row_labels=["real", "synthetic"])
'''),
        md("""
## 4. What training sees: `TrainMixture`

The training tasks read one dataset class, `datasets.TrainMixture`: with probability `p_real` a real pair (RICE,
one date; or a Sen2_MTC stack), otherwise a clear image (AID scenes, RICE labels of the *train* split) with
synthetic clouds over 1–3 dates. Every item is a crop with flips/rot90, deterministic given (seed, epoch, index):
`dates` padded to 3 (`n_dates` says how many are real), `target`, and `mask` (the generator's mask, or the
real-pair mask of section 1).
"""),
        code(r'''
if DATA is None:
    source = datasets.Source(rice=("SYNTH_PAIRS",), clear=("CLEAR",))
elif SMOKE:
    source = datasets.Source(rice=("RICE1",), clear=("RICE1/label",))
else:
    source = datasets.Source(rice=("RICE2",), clear=("AID", "RICE2/label", "RICE1/label"))
t0 = time.time()
ds = datasets.TrainMixture(ROOT, source, crop=64 if SMOKE else 128, p_real=0.25, dates=(1, 3), length=1000, seed=0)
print(f"{source}: {len(ds.pairs)} real pairs, {len(ds.clear)} clear images, loaded in {time.time() - t0:.1f} s")
rows, labels = [], []
for i in range(3 if SMOKE else 6):
    item = ds[i]
    n = item["n_dates"]
    rows.append([item["dates"][k] if k < n else None for k in range(3)] +
                [item["target"], (item["mask"], {"cbar": "mask"})])
    labels.append(f"item {i}: {n} date(s)")
pictures(rows, titles=["date 1", "date 2", "date 3", "target", "mask (date 1)"], row_labels=labels, size=2.0)
first, again = ds[3], ds[3]
ds.set_epoch(1)
other = ds[3]
print(f"item 3 read twice is identical: {torch.equal(first['dates'], again['dates'])}; in the next epoch it is "
      f"a new draw: {not torch.equal(first['dates'], other['dates'])}")
ds.set_epoch(0)
'''),
        md("""
## 5. The train/validation split of the shipped weights

`datasets.split_names` assigns each image to validation by a hash of its *name* (`sha1("cloudrm:" + name)`), with
the fractions in `datasets.VAL_FRACTION`. A hash split does not depend on file order and does not move when files
are added — so every training run, the app's sample list and `eval --split val` agree on it. The Sentinel-2
figure scenes are never trained on at all (validation only).
"""),
        code(r'''
rows = []
for name in RICE:
    names = [n for n, _, _ in datasets.rice_pairs(ROOT / name)]
    frac = datasets.VAL_FRACTION.get(name, 0.15)
    train, val = datasets.split_names(names, frac)
    shuffled = list(np.random.default_rng(0).permutation(names))
    half = names[::2]
    stable = (sorted(datasets.split_names(shuffled, frac)[1]) == sorted(val)
              and datasets.split_names(half, frac)[1] == [v for v in val if v in set(half)])
    rows.append({"dataset": name, "images": len(names), "fraction": frac, "train": len(train), "validation": len(val),
                 "same split when shuffled / subset": stable, "first validation ids": ", ".join(val[:8])})
split_df = pd.DataFrame(rows).set_index("dataset")
display(split_df)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(split_df.index, split_df["train"], label="train")
ax.bar(split_df.index, split_df["validation"], bottom=split_df["train"], label="validation")
ax.set(ylabel="image pairs", xlabel="dataset", title="hash split by image name")
ax.legend()
plt.show()
'''),
        md("The app and `python -m cloudrm samples` only ever show validation images (`cloudrm.samples`):"),
        code(r'''
from cloudrm import samples
found = samples.list_samples(per_group=2)
display(pd.DataFrame([{"name": s.name, "group": s.group, "dates": len(s.dates), "source": s.source,
                       "has reference": s.reference is not None} for s in found]))
'''),
        md("""
## 6. No data? Built-in samples

Without a data root, the app, the CLI's `samples` and these notebooks fall back on synthetic samples made at run
time from noise landscapes (`synth.demo_scene`) and the same cloud generator — no third-party image ships with the
project.
"""),
        code(r'''
rows, labels = [], []
for s in samples.builtin_samples():
    imgs = [io.to_display(io.read_image(p)) for p in s.dates]
    rows.append(imgs + [None] * (3 - len(imgs)) + [io.to_display(io.read_image(s.reference))])
    labels.append(f"{s.name}\n({s.group})")
pictures(rows, titles=["date 1", "date 2", "date 3", "reference"], row_labels=labels)
'''),
        md("""
**Next:** notebook 2 trains DiffCR on `TrainMixture` with accelerate; notebook 3 trains IDF-CR's Pixel-CR on the
real-pair masks shown in section 1.
"""),
        code(FINAL),
    ]


# ============================================================================================ notebook 2
def nb02() -> list[tuple[str, str]]:
    return [
        header("2 · DiffCR with accelerate", """
DiffCR (Zou et al. 2023) removes clouds from 1–3 cloudy dates of one place with a conditional diffusion model that
predicts the clean image $x_0$ directly. This notebook builds it from the package's parts and trains it with
🤗 accelerate:

1. the sigmoid noise schedule;
2. what the network's noise-level input means — and why feeding the step index breaks sampling;
3. the model: parameters and GMACs, against the paper;
4. the training loop written out with `Accelerator` (prepare, gradient accumulation, mixed precision, EMA,
   `save_state` / `load_state` resume) and its loss curve;
5. sampling the briefly trained model both ways (noise level vs step index);
6. the same loop in 2 processes with `notebook_launcher`;
7. DPM-Solver++, DDIM and DDPM at 1, 5 and 20 steps: quality against steps and seconds;
8. 1 vs 2 vs 3 dates.

The model trained here is small and trained for minutes; sections 7–8 use the shipped weights
(`cloudrm/bundled_weights/diffcr/sen2`) when they are present.
"""),
        *common_cells(),
        code(r'''
import copy
import pandas as pd
import torch.nn.functional as F
from cloudrm import datasets, io, metrics, sampling
from cloudrm.methods.diffcr import TRAIN_STEPS, diffcr_sample, train_alphas_cumprod
from cloudrm.models.diffcr_unet import DiffCRUNet, level_embedding

if DATA is not None:
    ROOT, SCENE_SETS = DATA, [s for s in ("Sen2_MTC_New_fig", "Sen2_MTC_Old_fig") if (DATA / s).is_dir()]
else:
    ROOT, SCENE_SETS = builtin_data_root(), ["SYNTH_SCENES"]
EVAL_SIZE = 64 if SMOKE else 256
EVAL_ITEMS = []                       # 3-date scenes with a clear reference (validation only, never trained on)
for s in SCENE_SETS:
    for it in datasets.iter_eval_items(ROOT / s, "scenes"):
        it["dates"], it["target"] = center_crop(it["dates"], EVAL_SIZE), center_crop(it["target"], EVAL_SIZE)
        EVAL_ITEMS.append(dict(it, name=f"{s.replace('_fig', '')}/{it['name']}"))
EVAL_ITEMS = EVAL_ITEMS[:1] if SMOKE else EVAL_ITEMS
SHIPPED = shipped("diffcr", "sen2", ["unet"])
print(f"evaluation scenes: {len(EVAL_ITEMS)} ({EVAL_SIZE} px, 3 dates each)")
'''),
        md(r"""
## 1. The sigmoid noise schedule

The forward process mixes the clean image with Gaussian noise, $y_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$.
DiffCR uses a **sigmoid** schedule for $\bar\alpha_t$ over $T = 2000$ training steps
(`sampling.sigmoid_alphas_cumprod`, start −3, end 3, τ = 1, betas clipped at 0.999). Compared with the classic
linear-β DDPM schedule it stays near 1 longer and reaches pure noise only at the very end.
"""),
        code(r'''
ac = torch.as_tensor(train_alphas_cumprod())                       # (2000,) alpha_bar_t, the DiffCR schedule
linear = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))              # DDPM (Ho et al.) for comparison
latent = sampling.make_scheduler("ddpm", prediction_type="epsilon").alphas_cumprod.numpy()  # IDF-CR's prior
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for y, label in ((ac.numpy(), "sigmoid (DiffCR), T = 2000"), (linear, "linear betas (DDPM), T = 1000"),
                 (latent, "scaled_linear (IDF-CR latent prior), T = 1000")):
    x = np.arange(len(y)) / len(y)
    axes[0].plot(x, y, label=label)
    axes[1].plot(x, 10 * np.log10(y / (1 - y)), label=label)
axes[0].set(xlabel="diffusion time t / T", ylabel=r"$\bar\alpha_t$ (signal fraction)", title="noise schedules")
axes[1].set(xlabel="diffusion time t / T", ylabel="signal-to-noise ratio (dB)", title="SNR = alpha_bar / (1 - alpha_bar)")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
print(f"alpha_bar at t = 0: {ac[0]:.6f}; at t = T-1: {ac[-1]:.2e} (the sampler starts here)")
'''),
        code(r'''
x0 = torch.from_numpy(EVAL_ITEMS[0]["target"]) * 2 - 1             # the model works in [-1, 1]
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
ts = [0, 400, 800, 1200, 1600, 1999]
noisy = [((ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * eps + 1) / 2).clamp(0, 1) for t in ts]
pictures([noisy], titles=[f"t = {t}, alpha_bar = {ac[t]:.3f}" for t in ts], size=2.2)
'''),
        md(r"""
## 2. What the noise-level input means

The denoiser is told how noisy its input is. In cloudrm (as in DiffCR's training code) that input is the
**continuous** $\bar\alpha \in (0, 1)$, embedded with sinusoids (`level_embedding`, of $1000\,\bar\alpha$) and an MLP.
Training draws it uniformly between $\bar\alpha_t$ and $\bar\alpha_{t-1}$ for a random step $t$
(`sampling.training_noise_level`); every sampler feeds $\bar\alpha_t$ at its timestep (`sampling.noise_level`, the
single conversion in the package).

The official DiffCR code feeds the **step index** $t \in [0, 999]$ at inference instead — a value the network never
saw in training. The histogram shows what training covers and where a 20-step DPM-Solver++ run queries it:
"""),
        code(r'''
draws = sampling.training_noise_level(ac, 50_000, torch.Generator().manual_seed(0))
sched = sampling.make_scheduler("dpmpp", prediction_type="sample",
                                trained_betas=sampling.betas_from_alphas_cumprod(ac.numpy()))
sched.set_timesteps(20)
levels = sampling.noise_level(ac, sched.timesteps)
fig, ax = plt.subplots(figsize=(11, 3))
ax.hist(draws.numpy(), bins=100, color="tab:gray", label="training draws (50 000)")
for i, lv in enumerate(levels):
    ax.axvline(float(lv), color="tab:red", lw=1, alpha=0.7, label="sampler's 20 steps" if i == 0 else None)
ax.set(xlabel=r"noise-level input $\bar\alpha$ (0 = pure noise, 1 = clean)", ylabel="count", yscale="log")
ax.legend()
plt.show()
print("sampler timesteps:", sched.timesteps.tolist())
'''),
        md("""
Feeding the index instead means the embedding receives numbers up to 1000 times larger. Which training noise
level does the network "think" it is at? For every sampler step we look for the training level whose embedding
is closest (cosine similarity) to the embedding of the step index:
"""),
        code(r'''
dim = DiffCRUNet().config.time_in
grid = torch.linspace(float(ac[-1]), 1.0, 20_000)
e_grid = F.normalize(level_embedding(grid, dim), dim=1)
step_index = (sched.timesteps.float() * 1000 / TRAIN_STEPS).floor()   # the official code's [0, 999] index
e_ok, e_bug = level_embedding(levels, dim), level_embedding(step_index, dim)
nearest = grid[(F.normalize(e_bug, dim=1) @ e_grid.T).argmax(1)]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(levels.numpy(), "o-", label=r"correct: $\bar\alpha_t$")
axes[0].plot(nearest.numpy(), "x--", label="what the step index looks like to the network")
axes[0].set(xlabel="sampler step (0 = noisiest)", ylabel=r"noise level $\bar\alpha$", title="effective noise level")
axes[0].legend(fontsize=8)
axes[1].plot(F.cosine_similarity(e_ok, e_bug).numpy(), "o-")
axes[1].set(xlabel="sampler step (0 = noisiest)", ylabel="cosine similarity",
            title="embedding(alpha_bar) vs embedding(step index)")
for ax in axes:
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
fig.tight_layout()
plt.show()
'''),
        md("""
## 3. The model: parameters and GMACs

`DiffCRUNet` is a NAFNet-style U-Net that outputs $x_0$, with a **decoupled condition encoder**: the dates go
through their own encoder once per image (shared weights, features averaged over the dates at every level) and the
features are added to the denoiser's encoder. Only the denoiser runs at every sampler step. We count both with
torch's FLOP counter (MACs = FLOPs / 2) at 256 × 256 px with 3 dates, for the paper's widths and the shipped
configuration.
"""),
        code(r'''
from torch.utils.flop_counter import FlopCounterMode

if SHIPPED:
    shipped_cfg = {k: v for k, v in DiffCRUNet.load_config(str(SHIPPED / "unet")).items() if not k.startswith("_")}
else:
    shipped_cfg = json.loads((REPO / "cloudrm/training/configs/diffcr-sen2.json").read_text())["model"]
variants = {"width 16 (paper ablation)": dict(width=16), "width 32 (paper ablation)": dict(width=32),
            "width 64 (paper)": dict(width=64), "shipped configuration": shipped_cfg}
paper = {"width 16 (paper ablation)": (1.67, 3.11), "width 32 (paper ablation)": (6.01, 11.79),
         "width 64 (paper)": (22.91, 45.86)}
size = 64 if SMOKE else 256          # smoke mode counts at 64 px and scales by the pixel count (exact for convs)
scale = (256 / size) ** 2
rows = []
for name, cfg in tqdm(variants.items(), desc="counting"):
    net = DiffCRUNet(**cfg).eval()
    dates, y = torch.zeros(1, 3, 3, size, size), torch.zeros(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        cond = net.encode_condition(dates)
    enc = fc.get_total_flops() / 2e9 * scale
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(y, torch.ones(1), cond)
    den = fc.get_total_flops() / 2e9 * scale
    rows.append({"model": name, "params (M)": sum(p.numel() for p in net.parameters()) / 1e6,
                 "GMACs condition encoder (3 dates)": enc, "GMACs denoiser (one step)": den,
                 "GMACs one forward": enc + den, "GMACs 20-step image": enc + 20 * den,
                 "paper params (M)": paper.get(name, (None, None))[0], "paper GMACs": paper.get(name, (None, None))[1]})
display(pd.DataFrame(rows).set_index("model").round(2))
print("shipped configuration:", shipped_cfg)
'''),
        md("""
## 4. The training loop, written out with `Accelerator`

The package trains every model with one loop (`cloudrm/training/loop.py`, used by `python -m cloudrm train`).
Here the same steps are written out so each piece is visible. What comes from the package: the **dataset**
(`TrainMixture`: real RICE pairs + synthetic 1–3-date stacks), the **model** (`DiffCRUNet`) and the **loss**
(`DiffCRTask.loss`: draw a continuous noise level, noise the target, MSE between the predicted and the true $x_0$).

What accelerate adds:

* `accelerator.prepare(...)` moves model, optimiser and data loader to the device(s), wraps the model for
  distributed data parallel when there are several processes and shards the batches between them;
* `accelerator.accumulate(model)` + `gradient_accumulation_steps`: gradients of several micro-batches are summed
  before one optimiser step (a larger effective batch on a small machine);
* `mixed_precision` ("no", "bf16" — the CPU option — or "fp16" on a GPU): `prepare` wraps the forward in autocast;
* EMA (diffusers' `EMAModel`): an exponential moving average of the weights, used for sampling;
* `save_state` / `load_state`: model, optimiser, RNG states and every object given to
  `register_for_checkpointing` (here the EMA and a small progress record), so training resumes exactly.
"""),
        code(r'''
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader
from cloudrm.training.loop import TrainConfig
from cloudrm.training.tasks import make_task

MIXED_PRECISION = "no"            # "bf16" also works on a CPU (slower there), "fp16" needs a GPU
USE_CPU = not torch.cuda.is_available()   # without cpu=True, processes on a GPU-less machine would not form a group
BATCH, ACCUM = 4, 2               # effective batch 8 = 4 x 2 micro-batches
LR, EMA_DECAY = 5e-4, (0.9 if SMOKE else 0.995)
STEPS_1, STEPS_2 = (6, 4) if SMOKE else (240, 120)      # optimiser steps before and after the resume
MODEL_CFG = {"width": 8} if SMOKE else {"width": 16}
if DATA is None:
    DATA_CFG = {"rice": ["SYNTH_PAIRS"], "clear": ["CLEAR"], "crop": 32 if SMOKE else 64, "dates": [1, 3]}
elif SMOKE:
    DATA_CFG = {"rice": ["RICE1"], "clear": ["RICE1/label"], "crop": 32, "dates": [1, 3]}
else:
    DATA_CFG = {"rice": ["RICE2"], "clear": ["AID", "RICE2/label", "RICE1/label"], "crop": 64, "dates": [1, 3]}
DATA_CFG["p_real"] = 0.25

task = make_task(TrainConfig(task="diffcr", variant="notebook", data_root=str(ROOT), model=MODEL_CFG,
                             data=DATA_CFG, seed=0))   # the package's DiffCR task: model, data and loss
t0 = time.time()
dataset = task.train_dataset()
print(f"TrainMixture: {len(dataset.pairs)} real pairs + {len(dataset.clear)} clear images "
      f"({time.time() - t0:.0f} s to load), crops of {DATA_CFG['crop']} px, 1-3 dates")


class Progress:
    """Step counter and loss log; anything with state_dict/load_state_dict can be checkpointed."""

    def __init__(self):
        self.step, self.losses = 0, []

    def state_dict(self):
        return {"step": self.step, "losses": list(self.losses)}

    def load_state_dict(self, state):
        self.step, self.losses = state["step"], list(state["losses"])


def build(accelerator, seed=0):
    """Model, optimiser, data loader and EMA, prepared for ``accelerator``."""
    set_seed(seed)
    model = task.build_model()                                      # DiffCRUNet(**MODEL_CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99))
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=EMA_DECAY)
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)            # saved and restored with the state
    return model, optimizer, loader, ema, progress


def train_steps(accelerator, model, optimizer, loader, ema, progress, n_steps, desc, show_bar=True):
    """Run ``n_steps`` optimiser steps (each ACCUM micro-batches)."""
    target = progress.step + n_steps
    model.train()
    bar = tqdm(total=n_steps, desc=desc, disable=not show_bar)
    micro = []
    while progress.step < target:
        for batch in loader:
            with accelerator.accumulate(model):                      # sums gradients over ACCUM micro-batches
                loss = task.loss(model, batch)                       # the package's DiffCR loss (x0 MSE)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()                                     # only acts on the ACCUM-th micro-batch
                optimizer.zero_grad(set_to_none=True)
            micro.append(loss.item())
            if accelerator.sync_gradients:                           # an optimiser step happened
                ema.step(accelerator.unwrap_model(model).parameters())
                progress.step += 1
                progress.losses.append(float(np.mean(micro)))
                micro = []
                bar.update(1)
                if progress.step >= target:
                    break
    bar.close()


def checksum(model):
    return sum(float(p.detach().double().abs().sum()) for p in model.parameters())
'''),
        md("First session: train, then `save_state` writes a checkpoint folder."),
        code(r'''
accelerator = Accelerator(cpu=USE_CPU, mixed_precision=MIXED_PRECISION, gradient_accumulation_steps=ACCUM)
model, optimizer, loader, ema, progress = build(accelerator)
print(f"device {accelerator.device}, {accelerator.num_processes} process(es), mixed precision "
      f"'{accelerator.mixed_precision}', {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
t0 = time.time()
train_steps(accelerator, model, optimizer, loader, ema, progress, STEPS_1, "session 1")
minutes_1 = (time.time() - t0) / 60
CKPT = WORK / "diffcr-checkpoint"
accelerator.save_state(str(CKPT))
saved_sum = checksum(accelerator.unwrap_model(model))
print(f"{progress.step} steps in {minutes_1:.1f} min; checkpoint files: {sorted(p.name for p in CKPT.iterdir())}")
'''),
        md("""
Second session: new objects (a different random initialisation, as after a restart), then `load_state` restores
the model, the optimiser's moments, the RNG states, the EMA weights and the progress record — and training goes on
where it stopped. (The data loader starts a new pass; `accelerator.skip_first_batches` would continue mid-epoch.)
"""),
        code(r'''
accelerator = Accelerator(cpu=USE_CPU, mixed_precision=MIXED_PRECISION, gradient_accumulation_steps=ACCUM)
model, optimizer, loader, ema, progress = build(accelerator, seed=1)
before = checksum(accelerator.unwrap_model(model))
accelerator.load_state(str(CKPT))
after = checksum(accelerator.unwrap_model(model))
print(f"weights checksum: saved {saved_sum:.4f} | fresh model {before:.4f} | after load_state {after:.4f}; "
      f"progress restored at step {progress.step}")
t0 = time.time()
train_steps(accelerator, model, optimizer, loader, ema, progress, STEPS_2, "session 2 (resumed)")
train_minutes = minutes_1 + (time.time() - t0) / 60
print(f"trained {progress.step} steps in {train_minutes:.1f} min in total")
'''),
        code(r'''
losses = np.array(progress.losses)
k = max(1, len(losses) // 20)
smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8, alpha=0.5, label="loss per optimiser step")
ax.plot(np.arange(k, len(losses) + 1), smooth, lw=2, label=f"running mean ({k} steps)")
ax.axvline(STEPS_1 + 0.5, color="k", ls="--", lw=1, label="save_state / load_state")
ax.set(xlabel="optimiser step (effective batch 8)", ylabel="MSE of x0 (images in [-1, 1])", yscale="log",
       title="DiffCR training loss")
ax.legend()
plt.show()

# the EMA weights are the ones used for sampling: export them as a weights folder cloudrm can load
net = copy.deepcopy(accelerator.unwrap_model(model)).eval()
ema.copy_to(net.parameters())
NB_WEIGHTS = WORK / "diffcr-notebook"
task.export(net, NB_WEIGHTS, {"trained_steps": progress.step, "train_minutes": round(train_minutes, 1),
                              "batch_size": BATCH * ACCUM, "validation": {}})
print("exported:", sorted(p.name for p in NB_WEIGHTS.rglob("*") if p.is_file()))
'''),
        md(r"""
## 5. Noise level vs step index: the same model sampled both ways

Now the consequence of section 2. We sample the model we just trained — and the shipped one, when present — with
the package's sampler (`diffcr_sample`, DPM-Solver++, and the 1-step mode), once as the package does it and once
with the official code's inference input. The *only* change is the function that turns a timestep into the
network's input, `sampling.noise_level`, which we temporarily replace with the step index. How much it costs
depends on how much the network has learnt to use its noise-level input: a briefly trained model leans mostly on
the cloudy dates, a fully trained one relies on the input at every step.
"""),
        code(r'''
from unittest import mock


def step_index_level(alphas_cumprod, t):
    """The official code's inference input: the step index in [0, 999] instead of alpha_bar_t."""
    t = torch.as_tensor(t, device=alphas_cumprod.device).float()
    return (t * 1000 / len(alphas_cumprod)).floor()


models = {"trained above (EMA)": net}
if SHIPPED:
    models["shipped (sen2)"] = cloudrm.load_method("diffcr").unet
SAMPLE_STEPS = 5 if SMOKE else 20


def sample_both_ways(unet, dates, steps):
    """The same sampler, noise and model; only the noise-level input differs."""
    ok = diffcr_sample(unet, dates, sampler="dpmpp", steps=steps, generator=torch.Generator().manual_seed(0))
    with mock.patch.object(sampling, "noise_level", step_index_level):
        bad = diffcr_sample(unet, dates, sampler="dpmpp", steps=steps, generator=torch.Generator().manual_seed(0))
    return ok[0].numpy(), bad[0].numpy()


rows, pics = [], []
for mname, unet in models.items():
    for it in tqdm(EVAL_ITEMS, desc=mname):
        dates = torch.from_numpy(it["dates"])[None]
        row = {"model": mname, "scene": it["name"]}
        for steps in (SAMPLE_STEPS, 1):
            ok, bad = sample_both_ways(unet, dates, steps)
            row[f"{steps} step(s): alpha_bar"] = metrics.psnr(it["target"], ok)
            row[f"{steps} step(s): step index"] = metrics.psnr(it["target"], bad)
            if it is EVAL_ITEMS[0]:
                pics.append([it["dates"][0], ok, bad, it["target"]])
        rows.append(row)
both = pd.DataFrame(rows)
summary_both = both.groupby("model", sort=False).mean(numeric_only=True)
display(summary_both.round(2).rename(columns=lambda c: c + " (PSNR dB)"))
for mname, r in summary_both.iterrows():
    print(f"{mname}: feeding the step index costs {r.iloc[0] - r.iloc[1]:+.2f} dB at {SAMPLE_STEPS} steps and "
          f"{r.iloc[2] - r.iloc[3]:+.2f} dB in the 1-step mode (mean over {len(EVAL_ITEMS)} scene(s))")
pictures(pics, titles=["cloudy date 1", "noise level = alpha_bar", "noise level = step index", "reference"],
         row_labels=[f"{m}\n{n} step(s)" for m in models for n in (SAMPLE_STEPS, 1)])
'''),
        md("""
## 6. The same loop in 2 processes: `notebook_launcher`

`accelerate.notebook_launcher` forks the notebook's process and runs a function in each copy with the
environment of a distributed run (on a CPU: the `gloo` backend). Everything accelerate-related must be created
*inside* the function: the launcher refuses to start when an `Accelerator` already exists in the notebook —
ours from section 4 does, so we clear accelerate's shared state first (in a fresh notebook you would simply not
create one before). On a machine without a GPU the function's `Accelerator` needs `cpu=True`: without it each
process would run as an independent single-process job. Each process builds the same model from the same seed; DDP averages the gradients, so the
two replicas must stay identical — we check it with a weight checksum per process.
"""),
        code(r'''
import socket
from accelerate import notebook_launcher
from accelerate.state import AcceleratorState

LAUNCH_STEPS = 3 if SMOKE else 20
LAUNCH_DIR = WORK / "launcher"
LAUNCH_DIR.mkdir(exist_ok=True)


def distributed_training(n_steps, out_dir):
    torch.set_num_threads(1)                     # 2 processes share the CPU cores
    accelerator = Accelerator(cpu=USE_CPU, mixed_precision=MIXED_PRECISION, gradient_accumulation_steps=ACCUM)
    model, optimizer, loader, ema, progress = build(accelerator)
    t0 = time.time()
    train_steps(accelerator, model, optimizer, loader, ema, progress, n_steps, "2 processes", show_bar=False)
    rank = accelerator.process_index
    (Path(out_dir) / f"replica-{rank}.json").write_text(json.dumps(
        {"rank": rank, "processes": accelerator.num_processes, "type": str(accelerator.distributed_type),
         "backend": accelerator.state.backend, "checksum": checksum(accelerator.unwrap_model(model)),
         "losses": progress.losses, "seconds": time.time() - t0}))
    accelerator.wait_for_everyone()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


AcceleratorState._reset_state(reset_partial_state=True)     # section 4 created an Accelerator in this process
launched = False
try:
    notebook_launcher(distributed_training, args=(LAUNCH_STEPS, str(LAUNCH_DIR)), num_processes=2,
                      use_port=free_port())
    launched = True
except Exception as exc:   # e.g. no fork on this platform, a GPU initialised in the parent, a blocked port
    msg = str(exc).strip().splitlines()
    print(f"notebook_launcher could not run 2 processes here: {type(exc).__name__}: {msg[0] if msg else ''}")
reps = [json.loads(p.read_text()) for p in sorted(LAUNCH_DIR.glob("replica-*.json"))]
if launched and len(reps) != 2:
    print(f"the processes did not form one group ({len(reps)} replica file(s)); on a machine without a GPU the "
          "Accelerator needs cpu=True")
if launched and len(reps) == 2:
    for r in reps:
        print(f"rank {r['rank']} of {r['processes']} ({r['type']}, backend {r['backend']}): "
              f"{LAUNCH_STEPS} steps in {r['seconds']:.1f} s, weight checksum {r['checksum']:.6f}")
    print(f"replicas identical: {reps[0]['checksum'] == reps[1]['checksum']}")
    if reps[0]["type"].endswith("MULTI_CPU"):
        print("(accelerate's launch message names its default device type; both processes ran on the CPU, gloo)")
print("\nThe same training from a terminal, in 2 processes (this works on CPU here):\n"
      "  accelerate launch --multi_gpu --num_processes 2 -m cloudrm train diffcr "
      "--config cloudrm/training/configs/diffcr-sen2.json")
'''),
        md("""
The package's own loop (`python -m cloudrm train`) runs unchanged under `accelerate launch`; it writes a loss
curve like the one above to its run folder, checkpoints every `checkpoint_every` steps and resumes from the last
checkpoint (or fine-tunes from the shipped weights) when started again.

## 7. Samplers: DPM-Solver++, DDIM and DDPM at 1, 5 and 20 steps

Because the network predicts $x_0$, any diffusers scheduler with `prediction_type="sample"` can drive it; the
package passes the sigmoid schedule as `trained_betas`. One step is special: the network's $x_0$ from pure noise at
the highest noise level (the paper's "1 step" row) — the same for all three samplers.
"""),
        code(r'''
if SHIPPED:
    method, which = cloudrm.load_method("diffcr"), "shipped sen2 weights"
else:
    method, which = cloudrm.load_method("diffcr", weights=str(NB_WEIGHTS)), "the model trained above"
print(f"sampling with {which}")
SAMPLERS, STEP_LIST = ("dpmpp", "ddim", "ddpm"), (1, 5, 20)
method(list(EVAL_ITEMS[0]["dates"]), steps=1)                  # warm-up (first call builds lazily)
rows, grid = [], {}
runs = [(it, s, n) for it in EVAL_ITEMS for s in SAMPLERS for n in STEP_LIST]
for it, s, n in tqdm(runs, desc="sampling"):
    res = method(list(it["dates"]), sampler=s, steps=n, seed=0)
    rows.append({"scene": it["name"], "sampler": s, "steps": n, "PSNR (dB)": metrics.psnr(it["target"], res.image),
                 "SSIM": metrics.ssim(it["target"], res.image), "seconds": res.seconds})
    if it is EVAL_ITEMS[0]:
        grid[s, n] = res.image
samp = pd.DataFrame(rows)
summary = samp.groupby(["sampler", "steps"]).mean(numeric_only=True)
display(summary.round(3))
median_psnr = np.mean([metrics.psnr(it["target"], np.median(it["dates"], 0)) for it in EVAL_ITEMS])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for s in SAMPLERS:
    sub = summary.loc[s]
    axes[0].plot(sub.index, sub["PSNR (dB)"], "o-", label=s)
    axes[1].plot(sub["seconds"], sub["PSNR (dB)"], "o-", label=s)
for ax in axes:
    ax.axhline(median_psnr, color="gray", ls=":", label="per-pixel median of the dates")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=8)
axes[0].set(xlabel="sampler steps (network evaluations)", title="quality against steps")
axes[1].set(xlabel="seconds per image (CPU)", title="quality against time")
fig.tight_layout()
plt.show()
pictures([[grid[s, n] for n in STEP_LIST] for s in SAMPLERS], titles=[f"{n} step(s)" for n in STEP_LIST],
         row_labels=list(SAMPLERS))
'''),
        md("""
## 8. One, two or three dates

One set of weights serves 1, 2 or 3 dates: the condition encoder averages the per-date features, and training
draws a random number of dates. More dates show more of the ground:
"""),
        code(r'''
rows, pics = [], []
for it in tqdm(EVAL_ITEMS, desc="dates"):
    outs = [method(list(it["dates"][:n]), seed=0).image for n in (1, 2, 3)]
    for n, out in zip((1, 2, 3), outs):
        rows.append({"scene": it["name"], "dates given": n, "PSNR (dB)": metrics.psnr(it["target"], out),
                     "SSIM": metrics.ssim(it["target"], out)})
    rows.append({"scene": it["name"], "dates given": "median of 3",
                 "PSNR (dB)": metrics.psnr(it["target"], np.median(it["dates"], 0)),
                 "SSIM": metrics.ssim(it["target"], np.median(it["dates"], 0))})
    if len(pics) < (1 if SMOKE else 2):
        pics.append(list(it["dates"]) + outs + [it["target"]])
by_dates = pd.DataFrame(rows)
table = by_dates.pivot_table(index="scene", columns="dates given", values="PSNR (dB)")
display(table.round(2))
fig, ax = plt.subplots(figsize=(9, 3.4))
xs = np.arange(len(table.index))
for k, col in enumerate(table.columns):
    ax.bar(xs + (k - 1.5) * 0.2, table[col], width=0.2, label=f"{col} date(s)" if col != "median of 3" else col)
ax.set_xticks(xs, [s.split("/")[-1] for s in table.index], rotation=15, fontsize=8)
ax.set(xlabel="scene", ylabel="PSNR (dB)", title=f"DiffCR ({which}) with 1, 2 or 3 cloudy dates")
ax.legend(fontsize=8)
plt.show()
pictures(pics, titles=["date 1", "date 2", "date 3", "DiffCR, 1 date", "2 dates", "3 dates", "reference"], size=2.0)
'''),
        md("""
**Takeaways.** The noise-level input must mean the same thing in training and sampling (the package pins it with
a test). The decoupled condition encoder makes sampling cheap: only the denoiser runs per step. DPM-Solver++
reaches its quality in far fewer steps than DDPM. To train the real thing:
`python -m cloudrm train diffcr --config cloudrm/training/configs/diffcr-sen2.json` (or under `accelerate launch`).
"""),
        code(FINAL),
    ]


# ============================================================================================ notebook 3
def nb03() -> list[tuple[str, str]]:
    return [
        header("3 · IDF-CR with accelerate", """
IDF-CR (Wang et al. 2024) removes clouds from a single image in two stages: **Pixel-CR**, a Swin transformer with
*cloudy attention*, removes the clouds in pixel space; then an **iterative noise diffusion** stage in a latent
space — a ControlNet steering a frozen latent diffusion prior, trained with *iterative noise refinement* (INR) —
adds the detail Pixel-CR's regression blurs away. This notebook goes through every part:

1. Pixel-CR trained with the cloudy-attention loss; its attention maps next to the true cloud masks;
2. the latent autoencoder and its reconstruction PSNR — the bound on everything after it;
3. the frozen latent prior;
4. the ControlNet made from the prior;
5. INR (Algorithm 3) written out step by step, then K = 1, 2, 3 trained on an equal budget;
6. Pixel-CR alone against K = 1, 2, 3 (PSNR, SSIM, NIQE, BRISQUE and pictures), as the paper's Table V.

Every part is trained here briefly with the package's own accelerate loop (`cloudrm.training.loop.train`, the
loop notebook 2 writes out by hand); the results in sections 1–4 and 6 use the shipped weights
(`cloudrm/bundled_weights/idfcr/rice2`) where they are present.
"""),
        *common_cells(),
        code(r'''
import copy, shutil
import pandas as pd
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from cloudrm import datasets, metrics, sampling, weights
from cloudrm.methods import idfcr as M
from cloudrm.models.pixel_cr import PixelCR
from cloudrm.training import idfcr_tasks as T
from cloudrm.training.loop import TrainConfig, train
from cloudrm.training.tasks import make_task

VARIANT = "rice2"                                   # the shipped weights this notebook compares against
if DATA is not None:
    ROOT, VAL_SET = DATA, "RICE2"
    PAIRS = ["RICE1"] if SMOKE else ["RICE2"]
    CLEAR = ["RICE1/label"] if SMOKE else ["RICE2/label", "AID"]
else:
    ROOT, VAL_SET, PAIRS, CLEAR = builtin_data_root(), "SYNTH_PAIRS", ["SYNTH_PAIRS"], ["CLEAR"]
CROP = 32 if SMOKE else 64                          # training crops of the brief runs here
VAL_SIZE = 64 if SMOKE else 256
N_VAL = 1 if SMOKE else 8
VAL_ITEMS = []                                     # the first validation pairs whose cloud mask covers >= 20 %
for it in datasets.validation_pairs(ROOT, VAL_SET):
    it = dict(it, dates=center_crop(it["dates"], VAL_SIZE), target=center_crop(it["target"], VAL_SIZE))
    if datasets.real_cloud_mask(it["dates"][0], it["target"]).mean() >= 0.2 and len(VAL_ITEMS) < N_VAL:
        VAL_ITEMS.append(it)
SHIP = weights.bundled_dir("idf-cr", VARIANT)


def tqdm_progress(desc):
    """A progress callback (i, n) for the package's samplers, drawn with tqdm."""
    bar = tqdm(desc=desc)

    def cb(i, n):
        bar.total = n
        bar.n = i
        bar.refresh()
        if i >= n:
            bar.close()
    return cb


def brief_config(task, steps, **kw):
    """A TrainConfig for a short run of the package's loop, writing only into the scratch folder."""
    base = dict(task=task, variant="notebook", data_root=str(ROOT), run_dir=str(WORK / f"run-{task}"),
                export_dir=str(WORK / f"export-{task}"),                  # never the repository's assets/
                batch_size=4, lr=5e-4, warmup_steps=max(1, steps // 10), max_steps=steps, stop_at_step=steps,
                ema_decay=None, val_every=steps, checkpoint_every=steps, log_every=max(1, steps // 8), seed=0)
    base.update(kw)
    return TrainConfig(**base)


def log_losses(run_dir):
    log = json.loads((Path(run_dir) / "log.json").read_text())
    return [r["step"] for r in log if "loss" in r], [r["loss"] for r in log if "loss" in r]


print(f"validation images: {len(VAL_ITEMS)} from {VAL_SET} ({VAL_SIZE} px, cloud cover >= 20 %); "
      f"brief training on {PAIRS} + {CLEAR}")
'''),
        md(r"""
## 1. Pixel-CR and the cloudy-attention loss

Pixel-CR stacks Swin transformer stages (window attention, shifted windows). After each stage a small
convolutional **cloudy attention** module predicts a one-channel map $A_i \in [0, 1]$ and re-weights the features:
$F_i = A_i \cdot \mathrm{ST}(F_{i-1}) + \mathrm{ST}(F_{i-1})$. The loss supervises both the image and the maps:

$$\mathcal{L} = \lVert \hat y - y \rVert_1 + w \cdot \tfrac{1}{N}\textstyle\sum_i \lVert A_i - M \rVert_2^2,$$

with $M$ the cloud mask: the binarised difference of cloudy and clear image for real pairs, the generator's mask
for synthetic clouds (notebook 1). A brief run of the package's loop (`task="pixel-cr"`), small model:
"""),
        code(r'''
PCR_STEPS = 6 if SMOKE else 150
PCR_MODEL = (dict(dim=16, stem_dims=[8, 16], depths=[2, 2], heads=2, window=4, mlp_ratio=2.0) if SMOKE else
             dict(dim=32, stem_dims=[16, 32], depths=[2, 2], heads=2, window=8, mlp_ratio=2.0))
pcr_cfg = brief_config("pixel-cr", PCR_STEPS, export_dir=str(WORK / "pixel-cr-notebook"), model=PCR_MODEL, lr=1e-3,
                       max_minutes=None if SMOKE else 3.0,           # a time cap for slow machines
                       data={"rice": PAIRS, "clear": CLEAR, "crop": CROP, "p_real": 0.5, "val": [VAL_SET],
                             "val_limit": N_VAL},
                       task_options={"attention_weight": 0.05})
pcr_task = make_task(pcr_cfg)                     # the package's task: PixelCR, TrainMixture and the loss above
fixed = next(iter(torch.utils.data.DataLoader(pcr_task.train_dataset(), batch_size=8)))
torch.manual_seed(0)
untrained = PixelCR(**PCR_MODEL).eval()           # the loop starts from this same seed-0 initialisation
t0 = time.time()
val = train(pcr_cfg)                              # accelerate: prepare, EMA, checkpoint, validation, export
done = weights.read_meta(WORK / "pixel-cr-notebook")["components"]["pixel_cr"]["trained_steps"]
print(f"{done} steps in {(time.time() - t0) / 60:.1f} min; validation: {val}")
trained = PixelCR.from_pretrained(str(WORK / "pixel-cr-notebook" / "pixel_cr")).eval()
with torch.no_grad():
    print(f"loss on a fixed batch: {pcr_task.loss(untrained, fixed):.4f} untrained -> "
          f"{pcr_task.loss(trained, fixed):.4f} after {done} steps")
steps, losses = log_losses(WORK / "run-pixel-cr")
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(steps, losses, "o-")
ax.set(xlabel="optimiser step (batch 4)", ylabel="L1 + w * attention MSE", yscale="log", title="Pixel-CR, brief run")
plt.show()
'''),
        md("""
Attention maps next to the true masks, on validation pairs. The map shown (`PixelCR.cloud_map`) is the last
stage's attention, upsampled; it is what the app displays as the cloud map. We score agreement with the mask by
correlation and by intersection-over-union at 0.5.
"""),
        code(r'''
if (SHIP / "pixel_cr" / "config.json").is_file():
    pcr_method, pcr_which = cloudrm.load_method("pixel-cr", weights=VARIANT), f"shipped ({VARIANT})"
else:
    print(f"Shipped Pixel-CR weights ({rel(SHIP)}) not found: using the model trained above.")
    pcr_method, pcr_which = cloudrm.load_method("pixel-cr", weights=str(WORK / "pixel-cr-notebook")), "trained above"
small_method = cloudrm.load_method("pixel-cr", weights=str(WORK / "pixel-cr-notebook"))


def agreement(cloud, mask):
    a, b = cloud > 0.5, mask > 0.5
    corr = np.corrcoef(cloud.ravel(), mask.ravel())[0, 1] if cloud.std() > 0 and mask.std() > 0 else np.nan
    return corr, (a & b).sum() / max((a | b).sum(), 1)


rows, pics = [], []
for it in tqdm(VAL_ITEMS, desc="Pixel-CR"):
    cloudy, target = it["dates"][0], it["target"]
    mask = datasets.real_cloud_mask(cloudy, target)
    for which, m in ((pcr_which, pcr_method), ("trained above", small_method)):
        res = m([cloudy])
        corr, iou = agreement(res.maps["cloud"], mask)
        rows.append({"model": which, "image": it["name"], "PSNR (dB)": metrics.psnr(target, res.image),
                     "PSNR cloudy input (dB)": metrics.psnr(target, cloudy), "attention-mask correlation": corr,
                     "attention-mask IoU": iou, "seconds": res.seconds})
        if len(pics) < (2 if SMOKE else 6) and which == pcr_which:
            pics.append([cloudy, res.image, (res.maps["cloud"], {"cmap": "magma", "cbar": "attention"}),
                         (mask, {"cmap": "magma", "cbar": "mask"}), target])
pcr_rows = pd.DataFrame(rows)
display(pcr_rows.groupby("model").mean(numeric_only=True).round(3))
pictures(pics[:3], titles=["cloudy", f"Pixel-CR ({pcr_which})", "attention map", "true cloud mask", "label"])
'''),
        code(r'''
# the attention after every stage (at the stages' resolution) for the first validation image
with torch.no_grad():
    _, maps = pcr_method.model(torch.from_numpy(VAL_ITEMS[0]["dates"][0])[None])
pictures([[VAL_ITEMS[0]["dates"][0]] + [(a[0, 0], {"cmap": "magma", "cbar": "A_i"}) for a in maps]],
         titles=["cloudy"] + [f"stage {i + 1}: {a.shape[-1]}x{a.shape[-2]}" for i, a in enumerate(maps)])
'''),
        md("""
## 2. The latent autoencoder

Stage 2 works on latents $z = E(x)$ of a diffusers `AutoencoderKL` (the official code's choice; the paper
describes a VQ-VAE — see the package's docs for why KL). Whatever the diffusion stage does, its output is
$D(z)$: an image the decoder can produce. So the autoencoder's **reconstruction PSNR of clear images is the
ceiling** of the whole stage — measure it first.

The three frozen parts stage 2 builds on (Pixel-CR, VAE, prior) are collected in one folder, `COMP`: the shipped
ones when present, otherwise trained here briefly (quality will then be poor; the package's configs train them
properly).
"""),
        code(r'''
COMP = WORK / "idfcr-parts"
COMP.mkdir(exist_ok=True)
ship_meta = weights.read_meta(SHIP) if (SHIP / "cloudrm.json").is_file() else {}
meta = {"method": "idf-cr", "variant": "notebook", "bands": ["B04", "B03", "B02"], "components": {}}
for part, fallback in (("pixel_cr", WORK / "pixel-cr-notebook"), ("vae", None), ("prior", None)):
    src = SHIP if (SHIP / part / "config.json").is_file() else fallback
    if src is None:
        continue
    shutil.copytree(src / part, COMP / part)
    meta["components"][part] = dict((weights.read_meta(src).get("components") or {}).get(part, {}),
                                    source="shipped" if src == SHIP else "trained in this notebook")
weights.write_meta(COMP, meta)
print({part: info["source"] for part, info in meta["components"].items()})

if not (COMP / "vae" / "config.json").is_file():
    AE_STEPS = 4 if SMOKE else 400
    print(f"Shipped autoencoder not found in {rel(SHIP)}: training one here for at most {AE_STEPS} steps / 3 min.")
    train(brief_config("autoencoder", AE_STEPS, export_dir=str(COMP), max_minutes=None if SMOKE else 3.0,
                       model={"block_out_channels": [8, 16, 16], "norm_num_groups": 8} if SMOKE else {},
                       data={"clear": CLEAR, "crop": CROP * 2, "val": [VAL_SET], "val_limit": N_VAL},
                       task_options={"kl_weight": 1e-6}))
vae = M.load_component(AutoencoderKL, COMP, "vae", weights.read_meta(COMP)).requires_grad_(False)
f = M.vae_factor(vae)
shift, scale = M.latent_stats(vae)
print(f"AutoencoderKL: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M params, downsampling f = {f}, "
      f"{vae.config.latent_channels} latent channels; latents standardised as (mean - {shift:.3f}) x {scale:.3f}")
'''),
        code(r'''
rows, pics = [], []
with torch.no_grad():
    for it in tqdm(VAL_ITEMS, desc="reconstructing"):
        target = torch.from_numpy(it["target"])[None]
        z = M.encode(vae, target)
        rec = M.decode(vae, z)[0].numpy()
        p_out = pcr_method([it["dates"][0]]).image
        p_rec = M.decode(vae, M.encode(vae, torch.from_numpy(p_out)[None]))[0].numpy()
        rows.append({"image": it["name"], "label reconstructed (dB)": metrics.psnr(it["target"], rec),
                     "Pixel-CR output (dB)": metrics.psnr(it["target"], p_out),
                     "Pixel-CR output reconstructed (dB)": metrics.psnr(it["target"], p_rec),
                     "latent mean": float(z.mean()), "latent std": float(z.std())})
        if not pics:
            pics = [[it["target"], rec, (np.abs(rec - it["target"]).mean(0) * 5, {"cmap": "inferno",
                     "cbar": "|error| x 5"})] + [(z[0, c], {"cmap": "RdBu_r", "vmin": -3, "vmax": 3, "cbar": "z"})
                                                 for c in range(min(4, z.shape[1]))]]
recon = pd.DataFrame(rows).set_index("image")
display(recon.round(3))
print(f"mean reconstruction PSNR of clear labels: {recon['label reconstructed (dB)'].mean():.2f} dB "
      "(the ceiling of the latent stage)")
pictures(pics, titles=["label", "D(E(label))", "error", "latent ch 1", "latent ch 2", "latent ch 3", "latent ch 4"],
         size=2.1)
'''),
        md(r"""
## 3. The frozen latent prior

A `UNet2DConditionModel` (without cross-attention) trained to predict the noise $\varepsilon$ in latents of
*clear* images — an unconditional model of what clear ground looks like — with latent diffusion's schedule
(`scaled_linear` betas 0.00085–0.012, T = 1000). After training it is **frozen**: stage 2 never changes it.
What it knows: samples from pure noise, and one-step denoising of a clear latent at several noise levels.
"""),
        code(r'''
if not (COMP / "prior" / "config.json").is_file():
    PRIOR_STEPS = 4 if SMOKE else 400
    print(f"Shipped latent prior not found in {rel(SHIP)}: training one here for at most {PRIOR_STEPS} steps / 3 min.")
    train(brief_config("prior", PRIOR_STEPS, export_dir=str(COMP), max_minutes=None if SMOKE else 3.0,
                       model={"block_out_channels": [8, 16, 16], "norm_num_groups": 8} if SMOKE else {},
                       data={"clear": CLEAR, "crop": CROP * 2, "val": [VAL_SET], "val_limit": N_VAL}))
prior = M.load_component(UNet2DConditionModel, COMP, "prior", weights.read_meta(COMP)).requires_grad_(False)
print(f"prior: {sum(p.numel() for p in prior.parameters()) / 1e6:.2f} M params, "
      f"{sum(p.numel() for p in prior.parameters() if p.requires_grad)} trainable (frozen)")
ac_p = M.make_scheduler("ddpm").alphas_cumprod.float()

n_s, side = (2, 64) if SMOKE else (4, 128)
gen = torch.Generator().manual_seed(0)
noise = sampling.randn((n_s, prior.config.in_channels, side // f, side // f), gen)
ctx = M.text_context(prior, n_s)
z_s = sampling.sample(lambda z_t, t: prior(z_t, t, encoder_hidden_states=ctx).sample, M.make_scheduler("ddim"),
                      noise, steps=5 if SMOKE else 50, generator=gen, progress=tqdm_progress("prior samples"))
with torch.no_grad():
    samples_img = M.decode(vae, z_s)
pictures([list(samples_img)], titles=[f"prior sample {i + 1}" for i in range(n_s)])

with torch.no_grad():
    z0 = M.encode(vae, torch.from_numpy(VAL_ITEMS[0]["target"])[None])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
    row, titles = [], []
    for t in (100, 300, 600, 900):
        tt = torch.tensor([t])
        z_t = T.q_sample(z0, tt, eps, ac_p)
        e_hat = prior(z_t, tt, encoder_hidden_states=M.text_context(prior, 1)).sample
        z0_hat = (z_t - (1 - ac_p[t]).sqrt() * e_hat) / ac_p[t].sqrt()
        img = M.decode(vae, z0_hat)[0]
        row.append(img)
        titles.append(f"t = {t}: {metrics.psnr(VAL_ITEMS[0]['target'], img.numpy()):.1f} dB")
pictures([row + [VAL_ITEMS[0]["target"]]], titles=titles + ["clear label"], suptitle="one-step denoising by the prior")
'''),
        md("""
## 4. The ControlNet made from the prior

The condition enters through a **ControlNet**: a trainable copy of the prior's encoder and middle block whose
outputs are added to the frozen prior's skip connections through **zero-initialised** 1×1 convolutions. Its input
is the noisy latent plus the condition — here the latent of Pixel-CR's output, $C_{latent} = E(\\text{Pixel-CR}(x))$,
added after its first convolution. Because the joining convolutions start at zero, a fresh ControlNet leaves the
prior unchanged; training can only move away from a working model. diffusers builds it with
`ControlNetModel.from_unet`:
"""),
        code(r'''
cn_channels = tuple(T.CONTROLNET_DEFAULTS["conditioning_embedding_out_channels"])
torch.manual_seed(0)
cn = ControlNetModel.from_unet(prior, conditioning_embedding_out_channels=cn_channels,
                               conditioning_channels=vae.config.latent_channels)
copied = all(torch.equal(a, b) for a, b in zip(cn.down_blocks.state_dict().values(),
                                                prior.down_blocks.state_dict().values()))
copied &= all(torch.equal(a, b) for a, b in zip(cn.mid_block.state_dict().values(),
                                                 prior.mid_block.state_dict().values()))
zero_parts = {"controlnet_down_blocks": cn.controlnet_down_blocks, "controlnet_mid_block": cn.controlnet_mid_block,
              "controlnet_cond_embedding.conv_out": cn.controlnet_cond_embedding.conv_out}
print(f"encoder and middle block copied from the prior: {copied}")
for name, mod in zero_parts.items():
    print(f"{name}: max |weight| = {max(float(p.detach().abs().max()) for p in mod.parameters())}")
count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6   # noqa: E731
display(pd.DataFrame([{"part": "latent prior (frozen)", "params (M)": count(prior)},
                      {"part": "ControlNet (trainable)", "params (M)": count(cn)},
                      {"part": "  of which zero convolutions", "params (M)": sum(count(m) for m in zero_parts.values())}
                      ]).set_index("part").round(3))
with torch.no_grad():
    z_t = torch.randn(1, prior.config.in_channels, 16, 16)
    cond = torch.randn(1, vae.config.latent_channels, 16, 16)
    t = torch.tensor([500])
    down, mid = cn(z_t, t, encoder_hidden_states=M.text_context(prior, 1), controlnet_cond=cond, return_dict=False)
    diff = (M.controlled_eps(prior, cn, z_t, t, cond)
            - prior(z_t, t, encoder_hidden_states=M.text_context(prior, 1)).sample).abs().max()
print("residual shapes added to the prior:", [tuple(d.shape[1:]) for d in down], "+ middle", tuple(mid.shape[1:]))
print(f"fresh ControlNet + prior vs prior alone: max |difference| of the predicted noise = {float(diff):.1e}")
'''),
        md(r"""
## 5. Iterative noise refinement (INR), Algorithm 3, written out

Ordinary ControlNet training takes one step per batch on $\lVert \varepsilon_\theta(z_t, t, C) - \varepsilon\rVert^2$.
INR takes **K passes over the same batch**; $z_0$, the condition and $t$ stay fixed, each pass is one optimiser
step, and the noise the model predicted in pass $k$ becomes the target noise of pass $k+1$:

```
θ_0 = θ;  ε ~ N(0, I);  t ~ U{0..T-1}
for k = 0 .. K-1:
    z_t  = sqrt(ᾱ_t) z_0 + sqrt(1 - ᾱ_t) ε          # f(z_0, ε)
    ε̂    = ε_θk(z_t, t, C_latent)
    θ_k+1 = optimiser step on ||ε̂ - ε||²
    ε    = ε̂ (detached)                              # the predicted noise is the next pass's noise
```

One batch from the package's ControlNet task (the frozen Pixel-CR, VAE and prior of `COMP`), with accelerate:
"""),
        code(r'''
from accelerate import Accelerator

K, INR_LR = 3, 2e-4
CN_DATA = {"rice": PAIRS, "clear": CLEAR, "crop": CROP * 2, "p_real": 0.5, "val": [VAL_SET], "val_limit": 1 if SMOKE else 4}
demo_cfg = brief_config("controlnet", 1, run_dir=str(WORK / "run-inr-demo"), export_dir=str(COMP),
                        model={"conditioning_embedding_out_channels": list(cn_channels)}, data=CN_DATA,
                        task_options={"inr": K, "components": str(COMP)})
cn_task = make_task(demo_cfg)
controlnet = cn_task.build_model()                       # ControlNetModel.from_unet(frozen prior): the common start
batch = next(iter(torch.utils.data.DataLoader(cn_task.train_dataset(), batch_size=4)))
z0, cond = cn_task.latents(batch)                        # E(clear target), E(Pixel-CR(cloudy input))
prior_f, ac_f = cn_task.frozen["prior"], cn_task.alphas_cumprod
check_copy = copy.deepcopy(controlnet)                   # the same start, for the cross-check below

accelerator = Accelerator()
optimizer = torch.optim.AdamW(controlnet.parameters(), lr=INR_LR)
controlnet, optimizer = accelerator.prepare(controlnet, optimizer)
g = torch.Generator().manual_seed(0)
t = torch.randint(0, cn_task.T, (z0.shape[0],), generator=g)
eps0 = torch.randn(z0.shape, generator=g)
eps, trace = eps0.clone(), []
for k in range(K):
    z_t = T.q_sample(z0, t, eps, ac_f)                                   # z0, condition and t stay fixed
    pred = M.controlled_eps(prior_f, controlnet, z_t, t, cond)            # eps_theta_k(z_t, t, C_latent)
    loss = F.mse_loss(pred.float(), eps)
    accelerator.backward(loss)
    optimizer.step()                                                     # theta_k -> theta_k+1
    optimizer.zero_grad(set_to_none=True)
    trace.append({"pass": k + 1, "loss": loss.item(), "target noise std": float(eps.std()),
                  "cos(target noise, first noise)": float(F.cosine_similarity(eps.flatten(), eps0.flatten(), dim=0)),
                  "|pred - target| / |target|": float((pred.detach() - eps).norm() / eps.norm())})
    eps = pred.detach().float()                                          # the predicted noise becomes the next noise
display(pd.DataFrame(trace).set_index("pass").round(4))

# the package's implementation (cloudrm.training.idfcr_tasks.inr_passes) from the same start gives the same passes
opt2 = torch.optim.AdamW(check_copy.parameters(), lr=INR_LR)


def optimiser_step(loss):
    loss.backward()
    opt2.step()
    opt2.zero_grad(set_to_none=True)


pkg = T.inr_passes(lambda z, tt, c: M.controlled_eps(prior_f, check_copy, z, tt, c), z0, cond, t, eps0, K,
                   optimiser_step, ac_f)
print("package inr_passes losses:", np.round(pkg, 5).tolist(), "| same as written out:",
      bool(np.allclose(pkg, [r["loss"] for r in trace], rtol=1e-4, atol=1e-7)))
'''),
        md("""
**Equal budget.** To compare K fairly, every K starts from the same ControlNet (`from_unet(prior)` with the same
seed) and sees the same batches in the same order — the same number of *batches*; K only changes the passes (and
optimiser steps) taken per batch. The package's loop runs it (`task="controlnet"`, `task_options.inr = K`; the
command line is `python -m cloudrm train controlnet --config ... --inr K`). The logged loss is the first pass's,
which is the plain denoising loss and comparable across K.
"""),
        code(r'''
INR_BATCHES = 3 if SMOKE else 40
inr_runs = {}
for K in (1, 2, 3):
    cfg = brief_config("controlnet", INR_BATCHES, run_dir=str(WORK / f"run-controlnet-k{K}"), export_dir=str(COMP),
                       model={"conditioning_embedding_out_channels": list(cn_channels)}, data=CN_DATA, lr=INR_LR,
                       task_options={"inr": K, "components": str(COMP), "val_sampler": "ddim",
                                     "val_steps": 2 if SMOKE else 10, "val_niqe": False})
    t0 = time.time()
    val = train(cfg)
    inr_runs[K] = {"seconds": time.time() - t0, "validation PSNR (dB)": val.get("psnr"),
                   "curve": log_losses(WORK / f"run-controlnet-k{K}")}
fig, ax = plt.subplots(figsize=(8, 3.2))
for K, r in inr_runs.items():
    ax.plot(*r["curve"], "o-", label=f"K = {K} ({r['seconds']:.0f} s)")
ax.set(xlabel="batches seen (equal budget)", ylabel="first-pass denoising loss (MSE)", yscale="log",
       title=f"ControlNet with INR, {INR_BATCHES} batches each, from one common start")
ax.legend()
plt.show()
display(pd.DataFrame({K: {k: v for k, v in r.items() if k != "curve"} for K, r in inr_runs.items()}).T.round(2))
'''),
        md("""
## 6. Pixel-CR alone against K = 1, 2, 3 (the paper's Table V)

The paper reports that the latent stage keeps PSNR close to Pixel-CR's while improving the no-reference scores
(lower NIQE and BRISQUE = more natural-looking detail), and that more INR passes help. We measure it on validation
pairs, with the shipped ControlNets (`controlnet_k1..3`) when present, else with the ones just trained (which
have seen only a few batches: expect little). IDF-CR samples with DDPM, 50 steps (its default), with the start
(`strength`) and colour fix (`color_fix`) its weights folder's `cloudrm.json` names — for the shipped weights a
start from the Pixel-CR latent noised to 70 % of the schedule and the `residual` fix, chosen on validation images
(README, Table V; both are documented in `cloudrm.methods.idfcr`). The first image is also sampled the paper's
plain way — pure noise, `D(z0)`, no fix — to show why.
"""),
        code(r'''
full_set = shipped("idf-cr", VARIANT, ["pixel_cr", "vae", "prior", "controlnet_k1", "controlnet_k2", "controlnet_k3"])
TABLE_WEIGHTS = VARIANT if full_set else str(COMP)
table_which = f"shipped ({VARIANT})" if full_set else "the parts in COMP with the ControlNets trained above"
idf = cloudrm.load_method("idf-cr", weights=TABLE_WEIGHTS)
pcr_t = cloudrm.load_method("pixel-cr", weights=TABLE_WEIGHTS)
IDF_SAMPLER, IDF_STEPS = ("ddim", 5) if SMOKE else ("ddpm", 50)
print(f"weights: {table_which}; sampler {IDF_SAMPLER}, {IDF_STEPS} steps; start strength {idf.strength}, "
      f"colour fix {idf.color_fix}")


def scores(target, out, seconds):
    m = metrics.evaluate(out, target)
    return {"PSNR (dB)": m["psnr"], "SSIM": m["ssim"], "NIQE": np.nan if m["niqe"] is None else m["niqe"],
            "BRISQUE": np.nan if m["brisque"] is None else m["brisque"], "seconds": seconds}


rows, pics = [], []
for it in tqdm(VAL_ITEMS, desc="Table V"):
    cloudy, target = it["dates"][0], it["target"]
    base = pcr_t([cloudy])
    rows.append({"setting": "Pixel-CR alone", "image": it["name"], **scores(target, base.image, base.seconds)})
    outs = [base.image]
    for K in (1, 2, 3):
        res = idf([cloudy], inr=K, sampler=IDF_SAMPLER, steps=IDF_STEPS, seed=0)
        rows.append({"setting": f"IDF-CR K = {K}", "image": it["name"], **scores(target, res.image, res.seconds)})
        outs.append(res.image)
    if len(pics) < (1 if SMOKE else 3):
        pics.append([cloudy, *outs, target])
    if it is VAL_ITEMS[0]:   # the colour fix, off, for K = 3
        with torch.no_grad():
            no_fix = M.idfcr_sample(idf.vae, idf.prior, idf.get_controlnet(3), torch.from_numpy(base.image)[None],
                                    sampler=IDF_SAMPLER, steps=IDF_STEPS, generator=torch.Generator().manual_seed(0),
                                    fix_color=False)[0].numpy()
table_v = pd.DataFrame(rows)
summary = table_v.groupby("setting", sort=False).mean(numeric_only=True)
display(summary.round(3))
if VAL_SET == "RICE2":
    print("for orientation, the paper on RICE2 (512 px, its own weights): Pixel-CR 30.90 dB / SSIM 0.9045 / NIQE 11.69;"
          " IDF-CR NIQE 4.42, BRISQUE 15.02")
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, col in zip(axes, ["PSNR (dB)", "NIQE", "BRISQUE"]):
    ax.bar(summary.index, summary[col], color=["tab:gray", "tab:blue", "tab:blue", "tab:blue"])
    ax.set(ylabel=col + ("" if col.startswith("PSNR") else " (lower is better)"), xlabel="setting")
    ax.tick_params(axis="x", rotation=20, labelsize=8)
fig.tight_layout()
plt.show()
pictures(pics, titles=["cloudy", "Pixel-CR", "K = 1", "K = 2", "K = 3", "label"], size=2.2)
print(f"first image, K = 3: as shipped "
      f"{table_v[(table_v.setting == 'IDF-CR K = 3')]['PSNR (dB)'].iloc[0]:.2f} dB; the paper's plain way "
      f"(pure noise, D(z0), no colour fix) {metrics.psnr(VAL_ITEMS[0]['target'], no_fix):.2f} dB")
'''),
        md("The latent stage cannot beat its autoencoder: per image, IDF-CR's PSNR against the reconstruction PSNR of "
           "the clear label (section 2)."),
        code(r'''
k3 = table_v[table_v.setting == "IDF-CR K = 3"].set_index("image")["PSNR (dB)"]
pc = table_v[table_v.setting == "Pixel-CR alone"].set_index("image")["PSNR (dB)"]
ceiling = recon["label reconstructed (dB)"].reindex(k3.index)
fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(ceiling, k3, label="IDF-CR, K = 3")
ax.scatter(ceiling, pc, marker="x", label="Pixel-CR alone")
lo, hi = float(np.nanmin([ceiling.min(), k3.min(), pc.min()])) - 1, float(np.nanmax([ceiling.max(), k3.max()])) + 1
ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x (the autoencoder bound)")
ax.set(xlabel="autoencoder reconstruction of the label (dB)", ylabel="PSNR of the output (dB)")
ax.legend(fontsize=8)
plt.show()
fmt = lambda v, unit="": "n/a (images too small for NIQE)" if np.isnan(v) else f"{v:+.2f}{unit}"   # noqa: E731
d_psnr = summary.loc["IDF-CR K = 3", "PSNR (dB)"] - summary.loc["Pixel-CR alone", "PSNR (dB)"]
d_niqe = summary.loc["IDF-CR K = 3", "NIQE"] - summary.loc["Pixel-CR alone", "NIQE"]
d_k = summary.loc["IDF-CR K = 3", "NIQE"] - summary.loc["IDF-CR K = 1", "NIQE"]
print(f"measured here ({table_which}, {len(VAL_ITEMS)} image(s)): IDF-CR K = 3 vs Pixel-CR alone: PSNR "
      f"{fmt(d_psnr, ' dB')}, NIQE {fmt(d_niqe)}; K = 3 vs K = 1: NIQE {fmt(d_k)} (negative NIQE = better)")
'''),
        md("""
**To train the real thing** (each part fine-tunes from the shipped weights when present):
`python -m cloudrm train pixel-cr --config cloudrm/training/configs/pixel-cr-rice2.json`, then `autoencoder`,
`prior`, and `controlnet --inr K` with their `*-rice2.json` configs; any of them also runs as
`accelerate launch --multi_gpu --num_processes 2 -m cloudrm train ...`.
"""),
        code(FINAL),
    ]


# ============================================================================================ notebook 4
def nb04() -> list[tuple[str, str]]:
    return [
        header("4 · Evaluate and compare", """
Every method of the package on the same images, with the shipped weights: a metrics table, quality against
seconds, a visual grid, and the `python -m cloudrm eval` commands that reproduce the README's numbers.

* **identity** (the first cloudy date) and **median** (per-pixel median of the dates) need no weights: the floor;
* **pixel-cr** and **idf-cr** (single image; RICE weights `rice1` for thin clouds, `rice2` for thick);
* **diffcr** (1–3 dates; weights `sen2`), at 20 DPM-Solver++ steps and in its 1-step mode.

Images: the project's validation split of RICE1 and RICE2 (never trained on) and the Sentinel-2 figure scenes
(3 dates; validation only). On the Sentinel-2 scenes, the outputs of published methods from the DiffCR paper's
figures are scored alongside (they are JPEG-derived crops: fine for comparison, not for absolute numbers).
"""),
        *common_cells(),
        code(r'''
import subprocess
import pandas as pd
from cloudrm import datasets, io, metrics, weights

LIMIT = 1 if SMOKE else 30               # validation images per RICE set (the eval commands below score all)
SIZE = 64 if SMOKE else None             # smoke mode scores central 64 px crops
STEPS = {"diffcr": 5 if SMOKE else 20, "idf-cr": 5 if SMOKE else 50}
SAMPLER = {"diffcr": "dpmpp", "idf-cr": "ddim" if SMOKE else "ddpm"}


def crop(it):
    if SIZE is None:
        return it
    return dict(it, dates=center_crop(it["dates"], SIZE), target=center_crop(it["target"], SIZE))


SETS = {}                                # name -> (items, RICE weights variant for the single-image methods)
if DATA is not None:
    for name, variant in (("RICE1", "rice1"), ("RICE2", "rice2")):
        if (DATA / name / "cloud").is_dir():
            SETS[f"{name} val"] = ([crop(it) for it in datasets.validation_pairs(DATA, name)[:LIMIT]], variant)
    for name in ("Sen2_MTC_New_fig", "Sen2_MTC_Old_fig"):
        if (DATA / name).is_dir():
            items = [crop(it) for it in datasets.iter_eval_items(DATA / name, "scenes")]
            SETS[name.replace("_fig", " fig")] = (items[:1] if SMOKE else items, "rice2")
else:
    from cloudrm import samples
    for s in samples.builtin_samples():
        it = {"name": s.name, "dates": np.stack([io.to_display(io.read_image(p)) for p in s.dates]),
              "target": io.to_display(io.read_image(s.reference))}
        SETS[f"built-in: {s.name}"] = ([crop(it)], "rice1" if s.group == "RICE1" else "rice2")
for name, (items, variant) in SETS.items():
    print(f"{name:<22} {len(items):>3} image(s), {items[0]['dates'].shape[0]} date(s), "
          f"{items[0]['target'].shape[-1]} px; pixel-cr/idf-cr weights '{variant}'")
'''),
        md("## 1. The shipped weights\n\nEach weights folder carries a `cloudrm.json` recording what it was "
           "trained on, for how long, and its validation numbers:"),
        code(r'''
rows = []
for method, (folder_name, default, variants) in weights.VARIANTS.items():
    if method == "pixel-cr":
        continue                                  # pixel-cr is the first part of the idf-cr folders
    for variant in variants:
        folder = weights.bundled_dir(method, variant)
        meta = weights.read_meta(folder) if (folder / "cloudrm.json").is_file() else {}
        if not meta:
            rows.append({"weights": f"{method} / {variant}", "part": "-", "status": "absent"})
            continue
        for part, info in (meta.get("components") or {}).items():
            val = info.get("validation") or {}
            rows.append({"weights": f"{method} / {variant}", "part": part, "status": "present",
                         "steps": info.get("trained_steps"), "minutes": info.get("train_minutes"),
                         "validation PSNR (dB)": val.get("psnr"), "hardware": info.get("hardware")})
display(pd.DataFrame(rows).set_index(["weights", "part"]))
'''),
        md("""
## 2. Every method on every set

`cloudrm.load_method(name, weights)` returns the same callable the CLI and the app use. A method whose weights
are absent is reported in one line and skipped.
"""),
        code(r'''
def settings_for(set_name, variant):
    """(row label, method name, weights, call options) for one evaluation set."""
    out = [("identity", "identity", None, {}), ("median", "median", None, {}),
           ("pixel-cr", "pixel-cr", variant, {}),
           (f"idf-cr K=3 ({STEPS['idf-cr']} {SAMPLER['idf-cr']})", "idf-cr", variant,
            {"inr": 3, "steps": STEPS["idf-cr"], "sampler": SAMPLER["idf-cr"]}),
           (f"diffcr ({STEPS['diffcr']} dpmpp)", "diffcr", "sen2", {"steps": STEPS["diffcr"], "sampler": "dpmpp"}),
           ("diffcr (1 step)", "diffcr", "sen2", {"steps": 1})]
    return out


loaded, missing = {}, set()


def get_method(name, spec):
    key = (name, spec)
    if key not in loaded and key not in missing:
        try:
            loaded[key] = cloudrm.load_method(name, weights=spec)
            if loaded[key].stochastic:                       # warm-up: lazily loaded parts are not timed
                loaded[key]([np.zeros((3, 64, 64), np.float32)], steps=1)
        except cloudrm.CloudRMError as exc:
            print(f"{name} ({spec}): weights not available, skipped: {str(exc).replace(str(REPO) + '/', '')}")
            missing.add(key)
    return loaded.get(key)


rows, outputs = [], {}
jobs = [(s, it, label, name, spec, opts) for s, (items, variant) in SETS.items() for it in items
        for label, name, spec, opts in settings_for(s, variant)]
for s, it, label, name, spec, opts in tqdm(jobs, desc="evaluating"):
    m = get_method(name, spec)
    if m is None:
        continue
    res = m(list(it["dates"]), seed=0, **opts)
    sc = metrics.evaluate(res.image, it["target"])
    rows.append({"set": s, "method": label, "image": it["name"], **sc, "seconds": res.seconds})
    outputs[s, it["name"], label] = res.image

# published outputs on the Sentinel-2 figure scenes (from the DiffCR paper's figures)
peers = (DATA / "peers") if DATA is not None else None
for s, (items, _) in SETS.items():
    folder = s.replace(" fig", "_fig")
    for peer in sorted(p.name for p in peers.iterdir()) if peers is not None and peers.is_dir() else []:
        for it in items:
            f = peers / peer / folder / f"{it['name']}.png"
            if f.is_file():
                out = io.to_display(io.to_rgb(io.read_image(f)))
                out = center_crop(out, SIZE) if SIZE else out
                if out.shape == it["target"].shape:
                    rows.append({"set": s, "method": f"published: {peer}", "image": it["name"],
                                 **metrics.evaluate(out, it["target"]), "seconds": np.nan})
                    outputs[s, it["name"], f"published: {peer}"] = out
results = pd.DataFrame(rows)
set_order = {s: i for i, s in enumerate(SETS)}
results["_order"] = [(set_order[s], m.startswith("published")) for s, m in zip(results["set"], results["method"])]
results = results.sort_values("_order", kind="stable").drop(columns="_order")
print(f"{len(results)} scored outputs")
'''),
        md("## 3. The metrics table\n\nMeans per set and method (PSNR/SSIM/RMSE against the clear reference; "
           "NIQE and BRISQUE are no-reference, lower is better; seconds per image on this CPU)."),
        code(r'''
cols = ["psnr", "ssim", "rmse", "niqe", "brisque", "seconds"]
table = (results.astype({c: float for c in cols}).groupby(["set", "method"], sort=False)[cols].mean()
         .rename(columns={"psnr": "PSNR (dB)", "ssim": "SSIM", "rmse": "RMSE", "niqe": "NIQE", "brisque": "BRISQUE",
                          "seconds": "s / image"}))
table.insert(0, "n", results.groupby(["set", "method"], sort=False).size())
pd.set_option("display.max_rows", 200)
display(table.round({"PSNR (dB)": 2, "SSIM": 4, "RMSE": 4, "NIQE": 2, "BRISQUE": 2, "s / image": 3}))
'''),
        md("## 4. Quality against seconds\n\nEach marker is one method on one set. Published methods have no "
           "time here: their PSNR range is the grey band, the official DiffCR output the dashed line."),
        code(r'''
own = table.reset_index()
fig, axes = plt.subplots(1, len(SETS), figsize=(4.2 * len(SETS), 3.8), squeeze=False)
for ax, s in zip(axes[0], SETS):
    sub = own[own["set"] == s]
    pub = sub[sub["method"].str.startswith("published")]
    if len(pub):
        ax.axhspan(pub["PSNR (dB)"].min(), pub["PSNR (dB)"].max(), color="gray", alpha=0.15,
                   label=f"{len(pub)} published methods (range)")
    for _, r in sub.iterrows():
        if r["method"].startswith("published"):
            continue
        ax.scatter(max(r["s / image"], 1e-4), r["PSNR (dB)"], s=40)
        ax.annotate(r["method"], (max(r["s / image"], 1e-4), r["PSNR (dB)"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if (sub["method"] == "published: diffcr").any():
        ax.axhline(float(sub.loc[sub["method"] == "published: diffcr", "PSNR (dB)"].iloc[0]), color="tab:red",
                   lw=1, ls="--", label="official DiffCR output")
    if len(pub):
        ax.legend(fontsize=7, loc="lower right")
    ax.set(xscale="log", xlabel="seconds per image (CPU, log scale)", ylabel="PSNR (dB)", title=s)
fig.tight_layout()
plt.show()
'''),
        md("## 5. A visual grid\n\nThe cloudiest evaluated image of every set: the first cloudy date, each "
           "method, the official DiffCR output where there is one, the reference."),
        code(r'''
labels = [l for l, *_ in settings_for(None, None)]
rows, row_labels = [], []
for s, (items, _) in SETS.items():
    it = max(items, key=lambda x: float(np.abs(x["dates"][0] - x["target"]).mean()))   # the cloudiest input
    row = [it["dates"][0]] + [outputs.get((s, it["name"], l)) for l in labels]
    if (s, it["name"], "published: diffcr") in outputs:
        row.append(outputs[s, it["name"], "published: diffcr"])
    else:
        row.append(None)
    rows.append(row + [it["target"]])
    row_labels.append(f"{s}\n{it['name']}")
pictures(rows, titles=["cloudy (date 1)"] + labels + ["official DiffCR", "reference"], row_labels=row_labels,
         size=2.0)
'''),
        md("""
## 6. The `eval` commands

`python -m cloudrm eval` scores a method on a data folder and writes JSON (with the settings used); the README's
tables come from these commands, on the whole validation split (`--split val`) of each RICE set and on all
Sentinel-2 figure scenes:
"""),
        code(r'''
commands = []
for data, variant in (("RICE1", "rice1"), ("RICE2", "rice2")):
    for method, extra in (("identity", ""), ("pixel-cr", f" --weights {variant}"),
                          ("idf-cr", f" --weights {variant} --inr 3"), ("diffcr", " --steps 20")):
        commands.append(f"python -m cloudrm eval --method {method}{extra} --data $CLOUDRM_DATA/{data} --split val "
                        f"--json {data.lower()}-{method}.json")
for data in ("Sen2_MTC_New_fig", "Sen2_MTC_Old_fig"):
    for method, extra in (("median", ""), ("diffcr", " --steps 20"), ("diffcr", " --steps 1")):
        commands.append(f"python -m cloudrm eval --method {method}{extra} --data $CLOUDRM_DATA/{data} "
                        f"--layout scenes --json {data.lower()}-{method}{extra.split()[-1] if extra else ''}.json")
print("\n".join(commands))
'''),
        md("One of them, run from here (a few images), to check that the command line and this notebook agree:"),
        code(r'''
if DATA is not None and (DATA / "RICE1" / "cloud").is_dir():
    method = "pixel-cr" if ("pixel-cr", "rice1") in loaded else "identity"
    n = 2 if SMOKE else 5
    out_json = WORK / "eval.json"
    cmd = [sys.executable, "-m", "cloudrm", "eval", "--method", method, "--data", str(DATA / "RICE1"), "--split",
           "val", "--limit", str(n), "--json", str(out_json)] + (["--weights", "rice1"] if method == "pixel-cr" else [])
    print("$ python -m cloudrm eval --method", method, *(["--weights", "rice1"] if method == "pixel-cr" else []),
          "--data $CLOUDRM_DATA/RICE1 --split val --limit", n, "--json eval.json")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    print(r.stdout.strip() if r.returncode == 0 else f"eval failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    if r.returncode == 0:
        cli = json.loads(out_json.read_text())
        full = [dict(it) for it in datasets.validation_pairs(DATA, "RICE1")[:n]]
        m = cloudrm.load_method(method, weights="rice1" if method == "pixel-cr" else None)
        mine = np.mean([metrics.psnr(it["target"], m(list(it["dates"])).image) for it in full])
        print(f"\nPSNR from the command line {cli['psnr']:.3f} dB; computed in this notebook on the same images "
              f"{mine:.3f} dB")
else:
    print("No RICE1 folder in the data root: the eval command needs real data; skipped.")
'''),
        md("""
**Reading the table.** On RICE (one date) `median` equals `identity`; the single-image methods are what matters
there. On the Sentinel-2 scenes the dates carry the information: `median` is already a strong baseline and DiffCR
should clear it. The no-reference scores reward natural-looking texture, which is what IDF-CR's latent stage adds.
`bench` (`python -m cloudrm bench`) measures speed, parameters and GMACs under controlled conditions.
"""),
        code(FINAL),
    ]


NOTEBOOKS = {
    "01_data_and_clouds": nb01,
    "02_diffcr_with_accelerate": nb02,
    "03_idfcr_with_accelerate": nb03,
    "04_evaluate_and_compare": nb04,
}




# ============================================================================================ building
def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (without outputs), with deterministic cell ids."""
    cells = []
    for i, (kind, src) in enumerate(NOTEBOOKS[name]()):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        cell["id"] = f"{name[:2]}-{i:03d}"
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": dict(KERNELSPEC),
                   "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    return nb


def write_all(names: list[str]) -> None:
    for name in names:
        path = NB_DIR / f"{name}.ipynb"
        old = nbformat.read(path, as_version=4) if path.exists() else None
        nb = build(name)
        if old is not None and _sources(old) == _sources(nb):
            print(f"{path.name}: unchanged")
            continue
        nbformat.write(nb, path)
        print(f"{path.name}: written (no outputs; run with --execute to fill them)")


def _sources(nb) -> list[tuple[str, str]]:
    out = []
    for c in nb.cells:
        src = c.source
        if c.cell_type == "markdown":
            src = "\n".join(RUNTIME_PENDING if line.startswith(RUNTIME_PREFIX) else line for line in src.split("\n"))
        out.append((c.cell_type, src))
    return out


# ============================================================================================ executing
def private_strings() -> list[str]:
    """Substrings no committed output may contain: home-directory prefixes and the user name."""
    bad = ["/root", "/home/"]
    home = os.path.expanduser("~")
    if home not in ("/", "") and home not in bad:
        bad.append(home)
    user = getpass.getuser()
    if user and user != "root":   # "root" itself is covered by "/root" (and "data root" is ordinary prose)
        bad.append(user)
    return bad


def output_texts(nb) -> list[str]:
    """Every text-like thing in the outputs (streams, text/plain, text/html, errors)."""
    texts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if "text" in o:
                texts.append(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
            for mime, val in (o.get("data") or {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    texts.append(val if isinstance(val, str) else str(val))
            if o.get("output_type") == "error":
                texts.append("\n".join(o.get("traceback", [])))
    return texts


def freeze_progress_bars(nb) -> None:
    """Replace tqdm's widget outputs by their final text line (GitHub does not render widgets)."""
    state = (nb.metadata.get("widgets") or {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})

    def model(ref):
        return state.get(str(ref).replace("IPY_MODEL_", ""), {}).get("state", {})

    for c in nb.cells:
        outs = []
        for o in c.get("outputs", []):
            view = (o.get("data") or {}).get("application/vnd.jupyter.widget-view+json")
            if view is None:
                outs.append(o)
                continue
            line = None
            box = model(view.get("model_id"))
            kids = [model(k) for k in box.get("children", [])]
            bars = [k for k in kids if "max" in k and "value" in k]
            texts = [html.unescape(re.sub(r"<[^>]+>", "", k.get("value", ""))) for k in kids if "max" not in k]
            if bars:
                b = bars[0]
                frac = (b["value"] / b["max"]) if b.get("max") else 1.0
                filled = int(round(20 * min(max(frac, 0.0), 1.0)))
                left = texts[0] if texts else ""
                right = texts[1] if len(texts) > 1 else ""
                if not left.rstrip().endswith("%"):
                    left = f"{left}{100 * frac:3.0f}%"
                line = f"{left}|{'█' * filled}{' ' * (20 - filled)}|{right}".strip()
            if line:
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=line + "\n"))
        c["outputs"] = outs
    nb.metadata.pop("widgets", None)


def fill_runtime(nb) -> str | None:
    """Put the run time printed by the last cell into the notebook's first markdown cell."""
    text = "\n".join(output_texts(nb))
    m = RUNTIME_RE.search(text)
    if not m:
        return None
    wall, cpu = float(m["wall"]), float(m["cpu"])
    mode = "full run" if m["mode"] == "full" else "smoke run (`CLOUDRM_SMOKE=1`)"
    line = (f"{RUNTIME_PREFIX} {mode}: {wall / 60:.1f} min wall-clock, {cpu / 60:.1f} min of CPU time "
            f"(kernel plus child processes) on a machine with {m['cores']} CPU cores "
            f"({'no GPU' if m['gpu'] == 'none' else 'GPU: ' + m['gpu']}; torch threads: {m['threads']}), "
            "measured by the last cell of the run whose outputs are stored here.")
    first = nb.cells[0]
    first.source = "\n".join(line if s.startswith(RUNTIME_PREFIX) else s for s in first.source.split("\n"))
    return line


def scrub(nb) -> None:
    """Last safety net: replace the home directory and absolute repository paths in outputs."""
    repl = [(str(REPO.parent) + "/", "../"), (os.path.expanduser("~"), "~")]

    def fix(s):
        for a, b in repl:
            if a and a not in ("/", "~"):
                s = s.replace(a, b)
        return s

    for c in nb.cells:
        for o in c.get("outputs", []):
            if "text" in o:
                o["text"] = fix(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
            for mime in list((o.get("data") or {})):
                if mime.startswith("text/") and isinstance(o["data"][mime], str):
                    o["data"][mime] = fix(o["data"][mime])


def execute(name: str, smoke: bool, out_dir: Path, timeout: int) -> float:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = build(name)
    env_backup = dict(os.environ)
    if smoke:
        os.environ["CLOUDRM_SMOKE"] = "1"
    else:
        os.environ.pop("CLOUDRM_SMOKE", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True, resources={"metadata": {"path": str(NB_DIR)}})
    t0 = time.perf_counter()
    target = out_dir / f"{name}.ipynb"
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = out_dir / f"{name}.failed.ipynb"
        nbformat.write(nb, failed)
        first = str(exc).strip().splitlines()
        raise SystemExit(f"{name}: a cell failed; partial notebook in {failed}\n" + "\n".join(first[-15:]))
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    wall = time.perf_counter() - t0
    freeze_progress_bars(nb)
    scrub(nb)
    line = fill_runtime(nb)
    leaks = [s for s in private_strings() if any(s in t for t in output_texts(nb))]
    if leaks:
        failed = out_dir / f"{name}.failed.ipynb"
        nbformat.write(nb, failed)
        raise SystemExit(f"{name}: outputs contain private strings {leaks}; see {failed}")
    nbformat.write(nb, target)
    size = target.stat().st_size / 1e6
    print(f"{name}: executed in {wall:.0f} s ({'smoke' if smoke else 'full'}), {size:.2f} MB -> {target}")
    if line:
        print(f"   {line}")
    if size >= 5:
        raise SystemExit(f"{name}: {size:.1f} MB is over the 5 MB limit")
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execute", action="store_true", help="run the notebooks and store their outputs")
    ap.add_argument("--smoke", action="store_true", help="with --execute: CLOUDRM_SMOKE=1 (small and fast)")
    ap.add_argument("--out", default=None, help="with --execute: write executed notebooks here (default: in place)")
    ap.add_argument("--only", default=None, help="comma-separated name prefixes, e.g. 02 or 01,04")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per cell (default 600 smoke, 1800 full)")
    args = ap.parse_args(argv)
    names = list(NOTEBOOKS)
    if args.only:
        names = [n for n in names if any(n.startswith(p.strip()) for p in args.only.split(","))]
    if not args.execute:
        write_all(names)
        return 0
    if args.smoke and args.out is None:
        ap.error("--smoke writes CI-sized outputs: give --out DIR (the committed notebooks keep full-run outputs)")
    write_all(names)
    out_dir = Path(args.out) if args.out else NB_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (600 if args.smoke else 1800)
    times = {n: execute(n, args.smoke, out_dir, timeout) for n in names}
    print("wall-clock per notebook: " + ", ".join(f"{n[:2]} {t:.0f} s" for n, t in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
