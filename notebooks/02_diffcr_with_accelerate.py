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
# # 2 · DiffCR with accelerate
#
# DiffCR (Zou et al. 2023) removes clouds from 1–3 cloudy dates of one place with a conditional diffusion model that
# predicts the clean image $x_0$ directly. This notebook builds it from the package's parts and trains it with
# 🤗 accelerate:
#
# 1. the sigmoid noise schedule;
# 2. what the network's noise-level input means — and why feeding the step index breaks sampling;
# 3. the model: parameters and GMACs, against the paper;
# 4. the training loop written out with `Accelerator` (prepare, gradient accumulation, mixed precision, EMA,
#    `save_state` / `load_state` resume) and its loss curve;
# 5. sampling the briefly trained model both ways (noise level vs step index);
# 6. the same loop in 2 processes with `notebook_launcher`;
# 7. DPM-Solver++, DDIM and DDPM at 1, 5 and 20 steps: quality against steps and seconds;
# 8. 1 vs 2 vs 3 dates.
#
# The model trained here is small and trained for minutes; sections 7–8 use the shipped weights
# (`cloudrm/bundled_weights/diffcr/sen2`) when they are present.
#
# **Run time:** full run: 3.9 min wall-clock, 7.5 min of CPU time (kernel plus child processes) on a machine with 2 CPU cores (no GPU; torch threads: 2), measured by the last cell of the run whose outputs are stored here.
#
# **How to run.** From a checkout: `pip install -r requirements.txt`, then open this notebook in Jupyter (its folder
# is the working directory). Data comes from `CLOUDRM_DATA` (default: `../../shared/data` relative to this notebook,
# the repository's sibling `shared/data`); without it every section says so in one line and continues on built-in
# synthetic samples. `CLOUDRM_SMOKE=1` shrinks sizes, iterations and steps (what CI runs); the numbers and pictures
# stored in this file come from a full run. Everything runs on a CPU; nothing needs the network.
# Its source is `02_diffcr_with_accelerate.py` beside it (jupytext py:percent): edit that file, not this one;
# [`README.md`](README.md) in this folder says how to sync and re-run.

# %%
# Setup, the same in every notebook: notebooks/nbsetup.py starts the run-time clock, reads the smoke switch
# (CLOUDRM_SMOKE=1), keeps the hub offline, finds the data root and holds the display helpers
import nbsetup  # first: it puts the repository on sys.path, so a plain checkout imports cloudrm
from nbsetup import DATA, REPO, SMOKE, WORK, builtin_data_root, center_crop, pictures, shipped

# isort: split
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from tqdm.auto import tqdm

import cloudrm

nbsetup.banner()

# %%
import copy

import pandas as pd
import torch.nn.functional as F

from cloudrm import datasets, metrics, sampling
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

# %% [markdown]
# ## 1. The sigmoid noise schedule
#
# The forward process mixes the clean image with Gaussian noise, $y_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$.
# DiffCR uses a **sigmoid** schedule for $\bar\alpha_t$ over $T = 2000$ training steps
# (`sampling.sigmoid_alphas_cumprod`, start −3, end 3, τ = 1, betas clipped at 0.999). Compared with the classic
# linear-β DDPM schedule it stays near 1 longer and reaches pure noise only at the very end.

# %%
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

# %%
x0 = torch.from_numpy(EVAL_ITEMS[0]["target"]) * 2 - 1             # the model works in [-1, 1]
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
ts = [0, 400, 800, 1200, 1600, 1999]
noisy = [((ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * eps + 1) / 2).clamp(0, 1) for t in ts]
pictures([noisy], titles=[f"t = {t}, alpha_bar = {ac[t]:.3f}" for t in ts], size=2.2)

# %% [markdown]
# ## 2. What the noise-level input means
#
# The denoiser is told how noisy its input is. In cloudrm (as in DiffCR's training code) that input is the
# **continuous** $\bar\alpha \in (0, 1)$, embedded with sinusoids (`level_embedding`, of $1000\,\bar\alpha$) and an MLP.
# Training draws it uniformly between $\bar\alpha_t$ and $\bar\alpha_{t-1}$ for a random step $t$
# (`sampling.training_noise_level`); every sampler feeds $\bar\alpha_t$ at its timestep (`sampling.noise_level`, the
# single conversion in the package).
#
# The official DiffCR code feeds the **step index** $t \in [0, 999]$ at inference instead — a value the network never
# saw in training. The histogram shows what training covers and where a 20-step DPM-Solver++ run queries it:

# %%
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

# %% [markdown]
# Feeding the index instead means the embedding receives numbers up to 1000 times larger. Which training noise
# level does the network "think" it is at? For every sampler step we look for the training level whose embedding
# is closest (cosine similarity) to the embedding of the step index:

# %%
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

# %% [markdown]
# ## 3. The model: parameters and GMACs
#
# `DiffCRUNet` is a NAFNet-style U-Net that outputs $x_0$, with a **decoupled condition encoder**: the dates go
# through their own encoder once per image (shared weights; at every level the dates' features are averaged, or, in
# the shipped `sen2` weights, weighted per pixel by a small learnt gate) and the features are added to the
# denoiser's encoder. Only the denoiser runs at every sampler step. We count both with
# torch's FLOP counter (MACs = FLOPs / 2) at 256 × 256 px with 3 dates, for the paper's widths and the shipped
# configuration.

# %%
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

# %% [markdown]
# ## 4. The training loop, written out with `Accelerator`
#
# The package trains every model with one loop (`cloudrm/training/loop.py`, used by `python -m cloudrm train`).
# Here the same steps are written out so each piece is visible. What comes from the package: the **dataset**
# (`TrainMixture`: real RICE pairs + synthetic 1–3-date stacks), the **model** (`DiffCRUNet`) and the **loss**
# (`DiffCRTask.loss`: draw a continuous noise level, noise the target, MSE between the predicted and the true $x_0$).
#
# What accelerate adds:
#
# * `accelerator.prepare(...)` moves model, optimiser and data loader to the device(s), wraps the model for
#   distributed data parallel when there are several processes and shards the batches between them;
# * `accelerator.accumulate(model)` + `gradient_accumulation_steps`: gradients of several micro-batches are summed
#   before one optimiser step (a larger effective batch on a small machine);
# * `mixed_precision` ("no", "bf16" — the CPU option — or "fp16" on a GPU): `prepare` wraps the forward in autocast;
# * EMA (diffusers' `EMAModel`): an exponential moving average of the weights, used for sampling;
# * `save_state` / `load_state`: model, optimiser, RNG states and every object given to
#   `register_for_checkpointing` (here the EMA and a small progress record), so training resumes exactly.

# %%
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


# %% [markdown]
# First session: train, then `save_state` writes a checkpoint folder.

# %%
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

# %% [markdown]
# Second session: new objects (a different random initialisation, as after a restart), then `load_state` restores
# the model, the optimiser's moments, the RNG states, the EMA weights and the progress record — and training goes on
# where it stopped. (The data loader starts a new pass; `accelerator.skip_first_batches` would continue mid-epoch.)

# %%
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

# %%
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

# %% [markdown]
# ## 5. Noise level vs step index: the same model sampled both ways
#
# Now the consequence of section 2. We sample the model we just trained — and the shipped one, when present — with
# the package's sampler (`diffcr_sample`, DPM-Solver++, and the 1-step mode), once as the package does it and once
# with the official code's inference input. The *only* change is the function that turns a timestep into the
# network's input, `sampling.noise_level`, which we temporarily replace with the step index. How much it costs
# depends on how much the network has learnt to use its noise-level input: a briefly trained model leans mostly on
# the cloudy dates, a fully trained one relies on the input at every step.

# %%
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

# %% [markdown]
# ## 6. The same loop in 2 processes: `notebook_launcher`
#
# `accelerate.notebook_launcher` forks the notebook's process and runs a function in each copy with the
# environment of a distributed run (on a CPU: the `gloo` backend). Everything accelerate-related must be created
# *inside* the function: the launcher refuses to start when an `Accelerator` already exists in the notebook —
# ours from section 4 does, so we clear accelerate's shared state first (in a fresh notebook you would simply not
# create one before). On a machine without a GPU the function's `Accelerator` needs `cpu=True`: without it each
# process would run as an independent single-process job. Each process builds the same model from the same seed; DDP averages the gradients, so the
# two replicas must stay identical — we check it with a weight checksum per process.

# %%
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

# %% [markdown]
# The package's own loop (`python -m cloudrm train`) runs unchanged under `accelerate launch`; it writes a loss
# curve like the one above to its run folder, checkpoints every `checkpoint_every` steps and resumes from the last
# checkpoint (or fine-tunes from the shipped weights) when started again.
#
# ## 7. Samplers: DPM-Solver++, DDIM and DDPM at 1, 5 and 20 steps
#
# Because the network predicts $x_0$, any diffusers scheduler with `prediction_type="sample"` can drive it; the
# package passes the sigmoid schedule as `trained_betas`. One step is special: the network's $x_0$ from pure noise at
# the highest noise level (the paper's "1 step" row) — the same for all three samplers.

# %%
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

# %% [markdown]
# ## 8. One, two or three dates
#
# One set of weights serves 1, 2 or 3 dates: the condition encoder fuses the per-date features (a gated mean), and
# training draws a random number of dates. With one date the `sen2` weights start from the one-step prediction and
# run only the last 30 % of the steps (`single_date_strength` in their `cloudrm.json`; the README's design
# decisions say why). More dates show more of the ground:

# %%
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

# %% [markdown]
# **Takeaways.** The noise-level input must mean the same thing in training and sampling (the package pins it with
# a test). The decoupled condition encoder makes sampling cheap: only the denoiser runs per step. DPM-Solver++
# reaches its quality in far fewer steps than DDPM. To train the real thing:
# `python -m cloudrm train diffcr --config cloudrm/training/configs/diffcr-sen2.json` (or under `accelerate launch`).

# %%
# Run time of this notebook (notebooks/postprocess.py copies this line into the run-time line at the top)
nbsetup.print_runtime()
