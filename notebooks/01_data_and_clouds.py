# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1 · Data and clouds
#
# Every cloud-removal model learns from pairs: cloudy input(s) and the clear image of the same place. This notebook
# looks at the data cloudrm uses and at the synthetic clouds it draws when real pairs run out:
#
# 1. the folder layouts (RICE and Sen2_MTC) and what one sample looks like;
# 2. reading a multiband GeoTIFF: band order, reflectance scaling and the display stretch;
# 3. the synthetic cloud generator (haze, thick clouds, shadows, multi-date stacks) and the masks it returns;
# 4. what a training batch contains (`datasets.TrainMixture`);
# 5. the train/validation split behind the shipped weights;
# 6. the built-in samples used when no data is present.
#
# **Run time:** full run: 0.3 min wall-clock, 0.3 min of CPU time (kernel plus child processes) on a machine with 2 CPU cores (no GPU; torch threads: 2), measured by the last cell of the run whose outputs are stored here.
#
# **How to run.** From a checkout: `pip install -r requirements.txt`, then open this notebook in Jupyter (its folder
# is the working directory). Data comes from `CLOUDRM_DATA` (default: `../../shared/data` relative to this notebook,
# the repository's sibling `shared/data`); without it every section says so in one line and continues on built-in
# synthetic samples. `CLOUDRM_SMOKE=1` shrinks sizes, iterations and steps (what CI runs); the numbers and pictures
# stored in this file come from a full run. Everything runs on a CPU; nothing needs the network.
# Its source is `01_data_and_clouds.py` beside it (jupytext py:percent): edit that file, not this one;
# [`README.md`](README.md) in this folder says how to sync and re-run.

# %%
# Setup, the same in every notebook: notebooks/nbsetup.py starts the run-time clock, reads the smoke switch
# (CLOUDRM_SMOKE=1), keeps the hub offline, finds the data root and holds the display helpers
import nbsetup  # first: it puts the repository on sys.path, so a plain checkout imports cloudrm
from nbsetup import DATA, SMOKE, WORK, builtin_data_root, center_crop, pictures, rel

# isort: split
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from tqdm.auto import tqdm

import cloudrm

nbsetup.banner()

# %%
import pandas as pd

from cloudrm import datasets, io, metrics, synth

ROOT = DATA if DATA is not None else builtin_data_root()
RICE = [n for n in ("RICE1", "RICE2") if (ROOT / n / "cloud").is_dir()] or ["SYNTH_PAIRS"]
SCENE_SETS = [n for n in ("Sen2_MTC_New_fig", "Sen2_MTC_Old_fig") if (ROOT / n).is_dir()] or ["SYNTH_SCENES"]
SIZE = 96 if SMOKE else 256           # picture size used in this notebook
N_SHOW = 1 if SMOKE else 3            # examples per dataset

# %% [markdown]
# ## 1. The layouts
#
# The data root holds one folder per dataset. `datasets.detect_layout` recognises three layouts:
#
# | layout | files | dates |
# |---|---|---|
# | `rice` | `cloud/ID.png` + `label/ID.png` (RICE1: thin clouds over Google Earth imagery; RICE2: thick clouds and shadows over Landsat 8) | 1 |
# | `sen2mtc` | `Sen2_MTC/<TILE>/cloud/<NAME>_{0,1,2}.tif` + `cloudless/<NAME>.tif`, 4-band uint16 GeoTIFF (R, G, B, NIR = B04, B03, B02, B08; reflectance × 10000), tile lists `train.txt`/`val.txt`/`test.txt` | 3 |
# | `scenes` | `<SCENE>/cloudy_*.png` + `clear.png`, one folder per place (the Sentinel-2 crops here are in this form) | 1–3 |

# %%
rows = []
for d in sorted(p for p in ROOT.iterdir() if p.is_dir()):
    try:
        layout = datasets.detect_layout(d)
    except cloudrm.CloudRMError:
        layout = "(other)"
    n = sum(1 for f in d.rglob("*") if f.suffix.lower() in io.IMAGE_EXTS)
    rows.append({"folder": d.name, "layout": layout, "image files": n})
display(pd.DataFrame(rows).set_index("folder"))

# %% [markdown]
# **RICE** pairs a cloudy image with a clear one taken shortly before or after. The difference between the two is a
# usable cloud map; Pixel-CR (notebook 3) learns to predict it with its cloudy attention. The map below is
# `datasets.real_cloud_mask`: the channel-mean absolute difference, binarised at 0.04.

# %%
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

# %% [markdown]
# **Sen2_MTC** (the DiffCR paper's data) gives three cloudy Sentinel-2 acquisitions of one tile and a cloud-free one.
# The crops in the data root come from the paper's figures, stored as `scenes`: clouds move between dates, so most
# of the ground is visible in at least one of them — that is what a multi-temporal model exploits.

# %%
rows, labels = [], []
for s in SCENE_SETS:
    scenes = datasets.scene_folders(ROOT / s)
    print(f"{s}: {len(scenes)} scenes ({', '.join(n for n, _, _ in scenes)})")
    for name, dates, clear in scenes[:N_SHOW if SMOKE else 2]:
        imgs = [center_crop(io.to_display(io.to_rgb(io.read_image(p))), SIZE) for p in [*dates, clear]]
        rows.append(imgs)
        labels.append(f"{s.replace('_fig', '')}\n{name}")
pictures(rows, titles=["date 1", "date 2", "date 3", "clear (target)"], row_labels=labels)

# %% [markdown]
# ## 2. Reading a multiband GeoTIFF
#
# The official Sen2_MTC files are 4-band `uint16` GeoTIFFs storing `DN = 10000 × reflectance`. We write a miniature
# copy of that layout (from the clear scene above plus synthetic clouds, and a made-up NIR band for illustration),
# then read it back the way every cloudrm entry point does (`io.read_image`).

# %%
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

# %%
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

# %% [markdown]
# **Band order and scaling.** 3- and 4-band files are read as R, G, B[, NIR] (`B04, B03, B02, B08`, the Sen2_MTC
# order); other band counts need `--bands` unless their band descriptions name them. Integer TIFFs are divided by
# 10000 into reflectance. Models see *display* values: `clip(reflectance × 3, 0, 1)` — one fixed,
# scene-wide gain, so tiles of a large scene share it and writing a GeoTIFF can invert it exactly. A percentile
# stretch (`io.stretch`) is only for looking at raw data: it differs per image.

# %%
display_rgb = io.to_display(io.to_rgb(r))
false_colour = io.to_display(io.read_image(tif, bands="B08,B04,B03"))      # NIR, red, green
pictures([[np.clip(r.data[:3], 0, 1), display_rgb, io.stretch(r.data[:3]), false_colour,
           (r.valid.astype(np.float32), {"cmap": "viridis", "cbar": "valid (1) / nodata (0)"})]],
         titles=["reflectance as is", f"display (x {io.REFLECTANCE_GAIN:g}, clipped)", "2-98 % stretch",
                 "false colour (NIR, R, G)", "valid pixels"])

# %% [markdown]
# Why a fixed gain and not a per-image stretch: a per-image stretch hides radiometric errors. The official DiffCR
# evaluation min-max stretches every output and target before scoring. Take an "output" that is the clear image
# but 25 % too dark — a real error a user would see:

# %%
too_dark = 0.75 * display_rgb
minmax = lambda a: (a - a.min()) / (a.max() - a.min())   # noqa: E731
print(f"PSNR(clear, 25 % too dark), display values:          {metrics.psnr(display_rgb, too_dark):6.2f} dB")
print(f"PSNR(clear, 25 % too dark), each min-max stretched:  {metrics.psnr(minmax(display_rgb), minmax(too_dark)):6.2f} dB"
      "  <- the error is gone")

# %% [markdown]
# Real GeoTIFFs from the data root (small test files): `tiff_info` reads the header only; `read_image` refuses what a method cannot use, with one line naming the file.

# %%
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

# %% [markdown]
# ## 3. Synthetic clouds
#
# Real multi-date pairs are scarce, so DiffCR also learns from clear images with clouds drawn by `cloudrm.synth`.
# The generator is built from *fractal noise* (1/f^β spectra): large β gives smooth billowy fields (cumulus), an
# anisotropic spectrum gives streaks (cirrus). From it:
#
# * `thick_cloud_alpha`: opacity of thick clouds — the noise thresholded at the quantile that gives the requested
#   coverage, with a soft ramp at the edges;
# * `haze_transmission`: how much ground shows through thin cloud (1 = clear);
# * `add_clouds`: haze (ground × t + airlight × (1 − t)), then shadows (the cloud opacity shifted along a sun
#   direction, blurred, darkening the ground towards a bluish "what a shadow keeps" colour where there is no
#   cloud; see the real layers below), then the cloud body. It returns the cloudy
#   image **and a mask** in [0, 1]: how much each pixel is degraded.

# %%
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

# %%
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

# %% [markdown]
# **Multi-date stacks.** `synth.multi_temporal` clouds each date independently and changes the clear ground a
# little between dates (gain/offset, like phenology or illumination); the target stays the clear image. At least
# the first date always has clouds, so no input is a free copy of the target.

# %%
dates, masks = synth.multi_temporal(clear, 3, np.random.default_rng(5))
clear_somewhere = (masks < 0.1).any(0)
pictures([list(dates) + [clear], [(m, {"cbar": "degradation"}) for m in masks] + [(clear_somewhere.astype(float),
          {"cbar": "clear in >= 1 date"})]],
         titles=["date 1", "date 2", "date 3", "target / where some date is clear"])
print(f"cloud-free (mask < 0.1) per date: {', '.join(f'{np.mean(m < 0.1):.0%}' for m in masks)}; "
      f"in at least one date: {clear_somewhere.mean():.0%}")

# %% [markdown]
# ### Real cloud layers (SEN12MS-CR)
#
# Procedural clouds are only as good as their realism. `cloudrm.cloudbank` measures real ones instead: for a real
# cloudy date `Y` and a clear date `X` of the same place (linear units: reflectance × 3), every pixel is fitted by
#
# `Y = (X · s + P · (1 − s)) · t + A · (1 − t)`
#
# with `t` the cloud's transmission (1 clear, 0 opaque), `A` the airlight (the colour of the cloud body, often
# above white once displayed: saturated cores), `s` a shadow darkening and `P` what a shadow keeps: the
# atmosphere's path radiance and blue sky light, which the cloud does not block. Real shadows are bluish, not
# grey (red keeps ~45 % of the clear value, blue ~80 %), and a grey fit leaves that cast unexplained; `P` is
# fitted per pair, like `A`, and the procedural shadows of `synth` are drawn over the same range. Ground change between the two dates
# leaks into `t` and `s` as texture, so small differences are snapped back to clear and the maps are smoothed a
# little. Below: each real pair, the layer, and the layer **put back on the clear date** — the fit PSNR says how
# much of the real cloudy date the model explains (the clear date alone: "identity"). Then the same layers
# composited onto *other* clear Sentinel-2 patches, as training sees them: real vs generated, side by side.

# %%
from cloudrm import cloudbank, datasets  # noqa: E402

s2 = DATA / "SEN12MS-CR" if DATA is not None else None
if s2 is None or not (s2 / "pairs").is_dir():
    print("No SEN12MS-CR folder in the data root; skipping the real cloud layers.")
else:
    folders = [s2 / "masked" / "4287", s2 / "pairs" / "ROIs1970_fall_136_p311", s2 / "pairs" / "ROIs1868_summer_135_p472",
               s2 / "masked" / "5349"]
    folders = [f for f in folders if f.is_dir()][: 2 if SMOKE else 4]
    rows, layers = [], []
    for f in folders:
        cloudy_lin, clear_lin, mask = cloudbank.read_pair(f)
        lay = cloudbank.estimate(cloudy_lin, clear_lin, mask, name=f.name)
        layers.append(lay)
        ident = cloudrm.metrics.psnr(cloudrm.io.tone(cloudy_lin), cloudrm.io.tone(clear_lin), quantise=False)
        rows.append([cloudrm.io.tone(clear_lin), cloudrm.io.tone(cloudy_lin),
                     (lay.transmission.astype(float), {"cbar": "t"}), (lay.shade.astype(float), {"cbar": "s"}),
                     cloudrm.io.tone(cloudbank.reproduce(lay, clear_lin))])
        print(f"{f.name:>26}: airlight {np.round(lay.airlight, 2)}, shadow keeps {np.round(lay.shadow_path, 2)}, "
              f"fit {lay.fit_psnr:.1f} dB "
              f"(identity {ident:.1f} dB), {lay.cover:.0%} of pixels degraded")
    pictures(rows, titles=["clear date", "real cloudy date", "transmission t", "shadow s", "layer on the clear date"],
             row_labels=[lay.name for lay in layers])

    bank = cloudbank.CloudBank(layers)
    grounds = sorted((s2 / "clear").glob("*.tif"))[:4]
    rng = np.random.default_rng(0)
    gen = []
    for g, lay in zip(grounds, layers):
        ground = cloudbank.linear(cloudrm.io.read_image(g))
        made, _ = cloudbank.CloudBank([lay]).composite(ground, rng)
        real_cloudy, _, _ = cloudbank.read_pair(next(f for f in folders if f.name == lay.name))
        gen.append([cloudrm.io.tone(real_cloudy), cloudrm.io.tone(ground), cloudrm.io.tone(made)])
    pictures(gen, titles=["real cloudy date", "another clear Sentinel-2 patch", "generated: its layer on that patch"],
             row_labels=[lay.name for lay in layers[:len(gen)]])
    all_layers = cloudbank.CloudBank.from_folders([s2 / "pairs", s2 / "masked"],
                                                  keep=lambda n: not datasets.s2_is_validation(n))
    fits = [lay.fit_psnr for lay in all_layers.layers]
    print(f"bank of the training regions: {len(all_layers)} layers, fit {np.median(fits):.1f} dB median "
          f"({min(fits):.1f}-{max(fits):.1f}); cover {np.median([lay.cover for lay in all_layers.layers]):.0%} median")

# %% [markdown]
# ### Snow is not a cloud
#
# A real pair teaches cloud removal only if its clear date shows the ground the cloudy date shows. Three SEN12MS-CR
# training pairs have **snow on the "clear" date** over snow-free ground: learnt from, they taught the models to paint
# white over dark ground (a checkered white patch in a cloud shadow), and their fitted layers were "shadows" over the
# whole frame. `cloudbank.teaches_removal` leaves out every pair whose clear date is white (the cover note's test:
# display ≥ 0.85, nearly grey) where the cloudy date is not, on more than `MAX_WHITENED` of the pixels, from the
# training pairs and from the bank.

# %%
if s2 is not None and (s2 / "pairs").is_dir():
    left_out = []
    for f in sorted(p for p in (s2 / "pairs").iterdir() if p.is_dir()):
        cloudy_lin, clear_lin, _ = cloudbank.read_pair(f)
        cloudy_d, clear_d = cloudrm.io.tone(cloudy_lin), cloudrm.io.tone(clear_lin)
        if not cloudbank.teaches_removal(cloudy_d, clear_d):
            left_out.append((f.name, cloudy_d, clear_d))
    print(f"left out (whitened above {cloudbank.MAX_WHITENED:.0%}): "
          + ", ".join(f"{n} ({cloudbank.whitened(c, k):.0%})" for n, c, k in left_out))
    if left_out:
        pictures([[c, k] for _, c, k in left_out[:1]], titles=["cloudy date", "'clear' date: snow"],
                 row_labels=[left_out[0][0]])

# %% [markdown]
# How much cloud does the default mixture produce? Statistics over many draws (64 × 64 px):

# %%
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

# %% [markdown]
# Real and synthetic side by side (the first Sentinel-2 scene's clear image, clouded by the generator):

# %%
real = [center_crop(io.to_display(io.to_rgb(io.read_image(p))), SIZE) for p in scene_dates]
fake, _ = synth.multi_temporal(clear, 3, np.random.default_rng(7))
pictures([real + [clear], list(fake) + [clear]], titles=["date 1", "date 2", "date 3", "clear"],
         row_labels=["real", "synthetic"])

# %% [markdown]
# ## 4. What training sees: `TrainMixture`
#
# The training tasks read one dataset class, `datasets.TrainMixture`: with probability `p_real` a real pair (RICE,
# one date; or a Sen2_MTC stack), otherwise a clear image (AID scenes, RICE labels of the *train* split) with
# synthetic clouds over 1–3 dates. Every item is a crop with flips/rot90, deterministic given (seed, epoch, index):
# `dates` padded to 3 (`n_dates` says how many are real), `target`, and `mask` (the generator's mask, or the
# real-pair mask of section 1).

# %%
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

# %% [markdown]
# ## 5. The train/validation split of the shipped weights
#
# `datasets.split_names` assigns each image to validation by a hash of its *name* (`sha1("cloudrm:" + name)`), with
# the fractions in `datasets.VAL_FRACTION`. A hash split does not depend on file order and does not move when files
# are added — so every training run, the app's sample list and `eval --split val` agree on it. The Sentinel-2
# figure scenes are never trained on at all (validation only).

# %%
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

# %% [markdown]
# The app and `python -m cloudrm samples` only ever show validation images (`cloudrm.samples`):

# %%
from cloudrm import samples

found = samples.list_samples(per_group=2)
display(pd.DataFrame([{"name": s.name, "group": s.group, "dates": len(s.dates), "source": s.source,
                       "has reference": s.reference is not None} for s in found]))

# %% [markdown]
# ## 6. No data? Built-in samples
#
# Without a data root, the app, the CLI's `samples` and these notebooks fall back on synthetic samples made at run
# time from noise landscapes (`synth.demo_scene`) and the same cloud generator — no third-party image ships with the
# project.

# %%
rows, labels = [], []
for s in samples.builtin_samples():
    imgs = [io.to_display(io.read_image(p)) for p in s.dates]
    rows.append(imgs + [None] * (3 - len(imgs)) + [io.to_display(io.read_image(s.reference))])
    labels.append(f"{s.name}\n({s.group})")
pictures(rows, titles=["date 1", "date 2", "date 3", "reference"], row_labels=labels)

# %% [markdown]
# **Next:** notebook 2 trains DiffCR on `TrainMixture` with accelerate; notebook 3 trains IDF-CR's Pixel-CR on the
# real-pair masks shown in section 1.

# %%
# Run time of this notebook (notebooks/postprocess.py copies this line into the run-time line at the top)
nbsetup.print_runtime()
