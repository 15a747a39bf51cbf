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
# # 4 · Evaluate and compare
#
# Every method of the package on the same images, with the shipped weights: a metrics table, quality against
# seconds, a visual grid, and the `python -m cloudrm eval` commands that reproduce the README's numbers.
#
# * **identity** (the first cloudy date) and **median** (per-pixel median of the dates) need no weights: the floor;
# * **pixel-cr** and **idf-cr** (single image; weights `rice1` for thin clouds, `rice2` for thick, `sen2` for
#   Sentinel-2);
# * **diffcr** (1–3 dates; weights `sen2`), at 20 DPM-Solver++ steps and in its 1-step mode.
#
# Images: the project's validation split of RICE1 and RICE2 (never trained on), the Sentinel-2 figure scenes
# (3 dates; never trained or tuned on), and real Sentinel-2 clouds of the SEN12MS-CR validation regions (one real
# date, and 3-date stacks). On the figure scenes, the outputs of published methods from the DiffCR paper's
# figures are scored alongside (they are JPEG-derived crops: fine for comparison, not for absolute numbers).
# Section 5 measures quality against the number of sampling steps on the real Sentinel-2 sets.
#
# **Run time:** full run: 7.8 min wall-clock, 14.9 min of CPU time (kernel plus child processes) on a machine with 2 CPU cores (no GPU; torch threads: 2), measured by the last cell of the run whose outputs are stored here.
#
# **How to run.** From a checkout: `pip install -r requirements.txt`, then open this notebook in Jupyter (its folder
# is the working directory). Data comes from `CLOUDRM_DATA` (default: `../../shared/data` relative to this notebook,
# the repository's sibling `shared/data`); without it every section says so in one line and continues on built-in
# synthetic samples. `CLOUDRM_SMOKE=1` shrinks sizes, iterations and steps (what CI runs); the numbers and pictures
# stored in this file come from a full run. Everything runs on a CPU; nothing needs the network.
# Its source is `04_evaluate_and_compare.py` beside it (jupytext py:percent): edit that file, not this one;
# [`README.md`](README.md) in this folder says how to sync and re-run.

# %%
# Setup, the same in every notebook: notebooks/nbsetup.py starts the run-time clock, reads the smoke switch
# (CLOUDRM_SMOKE=1), keeps the hub offline, finds the data root and holds the display helpers
import nbsetup  # first: it puts the repository on sys.path, so a plain checkout imports cloudrm
from nbsetup import DATA, REPO, SMOKE, WORK, center_crop, pictures

# isort: split
import json
import os
import sys

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from tqdm.auto import tqdm

import cloudrm

nbsetup.banner()

# %%
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
            SETS[name.replace("_fig", " fig")] = (items[:1] if SMOKE else items, "sen2")
    s2 = DATA / "SEN12MS-CR"
    if (s2 / "pairs").is_dir():
        # real Sentinel-2 clouds, validation regions only (datasets.S2_VAL_REGIONS; never trained on): one real
        # cloudy date, and 3-date stacks (that date + two made from the clear date with real cloud layers of the
        # training regions, as in the diffcr validation)
        bank = datasets.train_bank(DATA, ["SEN12MS-CR/pairs", "SEN12MS-CR/masked"])
        real = []
        for sub in ("pairs", "masked"):
            names = [n for n, _, clear in datasets.scene_folders(s2 / sub)
                     if clear is not None and datasets.s2_is_validation(n)]
            items = list(datasets.iter_eval_items(s2 / sub, "scenes", names=names))[:1 if SMOKE else None]
            SETS[f"S2 {sub} val"] = ([crop(it) for it in items], "sen2")
            real += items
        SETS["S2 3-date val"] = ([crop(dict(it, dates=datasets.s2_stack(it, bank, seed=i)))
                                  for i, it in enumerate(real)], "sen2")
else:
    from cloudrm import samples
    for s in samples.builtin_samples():
        it = {"name": s.name, "dates": np.stack([io.to_display(io.read_image(p)) for p in s.dates]),
              "target": io.to_display(io.read_image(s.reference))}
        SETS[f"built-in: {s.name}"] = ([crop(it)], s.variant)
for name, (items, variant) in SETS.items():
    print(f"{name:<22} {len(items):>3} image(s), {items[0]['dates'].shape[0]} date(s), "
          f"{items[0]['target'].shape[-1]} px; pixel-cr/idf-cr weights '{variant}'")

# %% [markdown]
# ## 1. The shipped weights
#
# Each weights folder carries a `cloudrm.json` recording what it was trained on, for how long, and its validation numbers:

# %%
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


# %% [markdown]
# ## 2. Every method on every set
#
# `cloudrm.load_method(name, weights)` returns the same callable the CLI and the app use. A method whose weights
# are absent is reported in one line and skipped.

# %%
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

# %% [markdown]
# ## 3. The metrics table
#
# Means per set and method (PSNR/SSIM/RMSE against the clear reference; NIQE and BRISQUE are no-reference, lower is better; seconds per image on this CPU).

# %%
cols = ["psnr", "ssim", "rmse", "niqe", "brisque", "seconds"]
table = (results.astype({c: float for c in cols}).groupby(["set", "method"], sort=False)[cols].mean()
         .rename(columns={"psnr": "PSNR (dB)", "ssim": "SSIM", "rmse": "RMSE", "niqe": "NIQE", "brisque": "BRISQUE",
                          "seconds": "s / image"}))
table.insert(0, "n", results.groupby(["set", "method"], sort=False).size())
pd.set_option("display.max_rows", 200)
display(table.round({"PSNR (dB)": 2, "SSIM": 4, "RMSE": 4, "NIQE": 2, "BRISQUE": 2, "s / image": 3}))

# %% [markdown]
# ## 4. Quality against seconds
#
# Each marker is one method on one set. Published methods have no time here: their PSNR range is the grey band, the official DiffCR output the dashed line.

# %%
own = table.reset_index()
ncols = min(3, len(SETS))
nrows = -(-len(SETS) // ncols)   # ceil
fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
for ax in axes.flat[len(SETS):]:
    ax.axis("off")
for ax, s in zip(axes.flat, SETS):
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

# %% [markdown]
# ## 5. Quality against sampling steps (real Sentinel-2)
#
# How many steps should each sampler take? PSNR against the clear date and NIQE (no reference; lower looks more
# natural) of diffcr (DPM-Solver++) and idf-cr (K = 3, DDPM) with the `sen2` weights, on the real-cloud validation
# sets only: the figure scenes are never used to choose anything. idf-cr is a single-image method, so it is scored
# on the one-date sets. Stars mark each method's default (`default_steps`).

# %%
CURVE = {"diffcr": [1, 2] if SMOKE else [1, 2, 4, 10, 20, 50],
         "idf-cr": [2, 4] if SMOKE else [5, 10, 25, 50]}   # steps are 1..50 (the contract)
curve_rows = []
for method, steps_list in CURVE.items():
    m = get_method(method, "sen2")
    if m is None:
        continue
    opts = {"sampler": "dpmpp"} if method == "diffcr" else {"inr": 3, "sampler": SAMPLER["idf-cr"]}
    sets = [s for s in SETS if s.startswith("S2 ") and (method == "diffcr" or "3-date" not in s)]
    for s in sets:
        for it in tqdm(SETS[s][0], desc=f"{method} on {s}", leave=False):
            for n in steps_list:
                res = m(list(it["dates"]), seed=0, steps=n, **opts)
                curve_rows.append({"method": method, "set": s, "steps": n, "image": it["name"],
                                   "psnr": metrics.psnr(it["target"], res.image), "niqe": metrics.niqe(res.image),
                                   "seconds": res.seconds})
curve = pd.DataFrame(curve_rows)
if len(curve):
    curve_table = curve.groupby(["method", "set", "steps"])[["psnr", "niqe", "seconds"]].mean()
    display(curve_table.unstack("set").round(2))
    defaults = {name: loaded[name, "sen2"].default_steps for name in CURVE if (name, "sen2") in loaded}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (method, s), sub in curve.groupby(["method", "set"], sort=False):
        mean = sub.groupby("steps")[["psnr", "niqe"]].mean()
        for ax, col in zip(axes, ("psnr", "niqe")):
            line, = ax.plot(mean.index, mean[col], marker="o", ms=3, ls="-" if method == "diffcr" else "--",
                            label=f"{method}: {s}")
            if defaults.get(method) in mean.index:
                ax.plot([defaults[method]], [mean.loc[defaults[method], col]], marker="*", ms=12, color=line.get_color())
    axes[0].set(xscale="log", xlabel="sampling steps (log scale)", ylabel="PSNR (dB)", title="PSNR (higher is better)")
    axes[1].set(xscale="log", xlabel="sampling steps (log scale)", ylabel="NIQE", title="NIQE (lower is better)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    plt.show()
else:
    print("No SEN12MS-CR validation data (or no sen2 weights): the steps curve needs real Sentinel-2 clouds; skipped.")

# %% [markdown]
# ## 6. A visual grid
#
# The cloudiest evaluated image of every set: the first cloudy date, each method, the official DiffCR output where there is one, the reference.

# %%
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

# %% [markdown]
# ## 7. The `eval` commands
#
# `python -m cloudrm eval` scores a method on a data folder and writes JSON (with the settings used); the README's
# tables come from these commands, on the whole validation split (`--split val`) of each RICE set and on all
# Sentinel-2 figure scenes:

# %%
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
for data in ("SEN12MS-CR/pairs", "SEN12MS-CR/masked"):
    for method, extra in (("identity", ""), ("pixel-cr", " --weights sen2"), ("idf-cr", " --weights sen2 --inr 3"),
                          ("diffcr", " --steps 20")):
        commands.append(f"python -m cloudrm eval --method {method}{extra} --data $CLOUDRM_DATA/{data} --split val "
                        f"--json s2-{data.split('/')[-1]}-{method}.json")
print("\n".join(commands))

# %% [markdown]
# One of them, run from here (a few images), to check that the command line and this notebook agree:

# %%
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

# %% [markdown]
# **Reading the table.** On RICE (one date) `median` equals `identity`; the single-image methods are what matters
# there. On the Sentinel-2 scenes the dates carry the information: `median` is already a strong baseline and DiffCR
# should clear it. The no-reference scores reward natural-looking texture, which is what IDF-CR's latent stage adds.
# `bench` (`python -m cloudrm bench`) measures speed, parameters and GMACs under controlled conditions.

# %%
# Run time of this notebook (notebooks/postprocess.py copies this line into the run-time line at the top)
nbsetup.print_runtime()
