"""The one training loop of the project (accelerate), shared by every model.

A *task* (see :mod:`cloudrm.training.tasks`, the registry) says what to train: it builds the model and data, computes the
loss of a batch, validates, and exports a weights folder. This loop owns everything else: the Accelerator
(mixed precision, gradient accumulation, multi-process via ``accelerate launch``), AdamW with warm-up and
cosine decay, EMA weights (diffusers' ``EMAModel``, used for validation and export), checkpoints with
``save_state`` / ``load_state`` every ``checkpoint_every`` steps, resume from the last checkpoint (or from the
shipped weights when there is none), validation, a JSON log and a matplotlib loss curve.

A resumed run continues the same run: the shuffle order is a function of (seed, epoch) (accelerate's seedable
sampler), the batches of the epoch already trained on are skipped, the datasets draw their clouds from
(seed, epoch, index), and ``load_state`` restores the RNG that draws the noise, so on the same machine and thread
count the losses after a resume are those of an uninterrupted run.

Time-boxed runs: ``max_minutes`` stops cleanly (checkpoint + export) so a CPU session can train in slices.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from .. import weights
from ..errors import ConfigError
from .config import TrainConfig, val_spec
from .tasks import make_task


def _param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters, one group per ``cfg.lr_mult`` prefix (its lr scaled) plus one for the rest."""
    groups: dict[float, list] = {}
    unused = set(cfg.lr_mult)
    for name, p in model.named_parameters():
        matches = [k for k in cfg.lr_mult if name.startswith(k)]
        unused -= set(matches)
        if p.requires_grad:
            groups.setdefault(float(cfg.lr_mult[matches[0]] if matches else 1.0), []).append(p)
    if unused:
        raise ConfigError(f"lr_mult: no parameter starts with {', '.join(map(repr, sorted(unused)))}")
    return [{"params": ps, "lr": cfg.lr * m} for m, ps in sorted(groups.items())]


def _lr_lambda(cfg: TrainConfig, start: int = 0):
    """Linear warm-up, then cosine decay to 5 % over ``max_steps``. ``start`` > 0 (fine-tuning shipped
    weights that were trained ``start`` steps) continues the cosine where it was, after a short re-warm-up."""
    def f(i: int) -> float:
        step = start + i
        warm = min(1.0, (i + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if step < cfg.warmup_steps:
            return warm
        p = min((step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1), 1.0)
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))
    return f


def _last_checkpoint(run_dir: Path) -> Path | None:
    cks = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return cks[-1] if cks else None


def plot_curve(log: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log if "loss" in r]
    losses = [r["loss"] for r in log if "loss" in r]
    vsteps = [r["step"] for r in log if "val_psnr" in r]
    vpsnr = [r["val_psnr"] for r in log if "val_psnr" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=1, label="training loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if vpsnr:
        ax2 = ax.twinx()
        ax2.plot(vsteps, vpsnr, "o-", color="C1", label="validation PSNR")
        ax2.set_ylabel("validation PSNR (dB)")
    ax.set_title("training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a training run; returns the last validation numbers."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task = make_task(cfg)
    run_dir = cfg.path(cfg.run_dir, task.weights_dir)
    export_dir = cfg.path(cfg.export_dir, task.weights_dir)
    accelerator = Accelerator(cpu=cfg.cpu or not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                              gradient_accumulation_steps=cfg.grad_accum,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed))
    set_seed(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)

    model = task.build_model()
    checkpoint = _last_checkpoint(run_dir)
    state = {"step": 0, "epoch": 0, "batch": 0, "seconds": 0.0, "best": -1.0}  # batch: in this epoch
    init_from = Path(os.path.expanduser(cfg.init_from)) if cfg.init_from else None
    if checkpoint is None and init_from and (init_from / getattr(task, "init_subfolder", task.subfolder)).exists():
        # no checkpoint (e.g. a new session): fine-tune the shipped weights, keeping their step count,
        # wall time and validation score, so a worse export never replaces them
        done_before = task.load_init(model, init_from)
        if weights.read_meta(init_from).get("variant", cfg.variant) == cfg.variant:
            state.update(done_before, lr_start=done_before["step"])
        else:  # another variant's weights (e.g. sen2 -> rice2): a new run that starts from them
            state["init_from"] = {"folder": str(cfg.init_from), **done_before}
        accelerator.print(f"starting from weights {cfg.init_from} ({done_before})")
    dataset = task.train_dataset()
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                        drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, state["step"]))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    log: list[dict] = []
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "cloudrm_state.json").read_text())
        state.setdefault("batch", 0)  # checkpoints from before it was kept: continue at an epoch's start
        log = json.loads((run_dir / "log.json").read_text()) if (run_dir / "log.json").exists() else []
        log = [r for r in log if r["step"] <= state["step"]]
        inner = getattr(scheduler, "scheduler", scheduler)  # the LR curve's offset is not in the state dict
        inner.lr_lambdas = [_lr_lambda(cfg, state.get("lr_start", 0))] * len(optimizer.param_groups)
        accelerator.print(f"resumed from {checkpoint} (step {state['step']})")
        if state.get("val_spec") != val_spec(cfg.data):  # a best score on other validation data is not comparable
            state["best"] = -1.0
    state["val_spec"] = val_spec(cfg.data)

    def save_checkpoint() -> None:
        accelerator.wait_for_everyone()
        ck = run_dir / f"checkpoint-{state['step']}"
        accelerator.save_state(str(ck))
        if accelerator.is_main_process:
            (ck / "cloudrm_state.json").write_text(json.dumps(state))
            (run_dir / "log.json").write_text(json.dumps(log))
            for old in sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)

    def validate() -> dict[str, float]:
        net = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(net.parameters())
            ema.copy_to(net.parameters())
        net.eval()
        with torch.no_grad():
            res = task.validate(net)
        net.train()
        if ema is not None:
            ema.restore(net.parameters())
        return res

    def export(val: dict[str, float]) -> None:
        if not accelerator.is_main_process:
            return
        net = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(net.parameters())
            ema.copy_to(net.parameters())
        meta = {"trained_steps": state["step"], "train_minutes": round(state["seconds"] / 60, 1),
                "batch_size": cfg.batch_size * cfg.grad_accum * accelerator.num_processes,
                "validation": val, "config": asdict(cfg)}
        if "init_from" in state:
            meta["initialised_from"] = state["init_from"]
        task.export(net, export_dir, meta)
        if ema is not None:
            ema.restore(net.parameters())
        plot_curve(log, run_dir / "loss_curve.png")

    t_start = time.time() - state["seconds"]
    t_run = time.time()
    stop_step = min(cfg.stop_at_step or cfg.max_steps, cfg.max_steps)
    model.train()
    last_val: dict[str, float] = {}
    running, n_running = 0.0, 0
    done = state["step"] >= stop_step
    while not done:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(state["epoch"])
        loader.set_epoch(state["epoch"])  # the shuffle order of this epoch
        skip = state["batch"]             # > 0 only in the epoch a resumed run continues
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            state["batch"] += 1
            with accelerator.accumulate(model):
                loss = task.train_step(model, batch, optimizer, accelerator, params, cfg.grad_clip)
                scheduler.step()
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(accelerator.unwrap_model(model).parameters())
            state["step"] += 1
            state["seconds"] = time.time() - t_start
            running += float(loss)
            n_running += 1
            if state["step"] % cfg.log_every == 0:
                rec = {"step": state["step"], "loss": running / n_running, "lr": scheduler.get_last_lr()[0],
                       "minutes": round(state["seconds"] / 60, 2)}
                log.append(rec)
                accelerator.print(json.dumps(rec), flush=True)
                running, n_running = 0.0, 0
            timed_out = cfg.max_minutes is not None and (time.time() - t_run) > cfg.max_minutes * 60
            done = state["step"] >= stop_step or timed_out
            improved = False
            if state["step"] % cfg.val_every == 0 or done:
                last_val = validate() if accelerator.is_main_process else {}
                log.append({"step": state["step"], **{f"val_{k}": v for k, v in last_val.items()}})
                accelerator.print(json.dumps(log[-1]), flush=True)
                improved = (last_val.get("psnr", 0.0) > state.get("best", -1.0)
                            and all(last_val.get(k, -1.0) >= v for k, v in cfg.val_floor.items()))
                if cfg.export_last:  # e.g. ControlNets compared at an equal budget: the last one ships
                    improved = bool(last_val)
                if improved:  # the best validation so far is what ships
                    state["best"] = last_val.get("psnr", 0.0)
            if state["step"] % cfg.checkpoint_every == 0 or done:
                save_checkpoint()
            if improved:
                export(last_val)
            if done:
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:  # replicas must stay identical: record each one's checksum
        net = accelerator.unwrap_model(model)
        total = sum(float(p.detach().double().abs().sum()) for p in net.parameters())
        (run_dir / f"replica-{accelerator.process_index}.txt").write_text(repr(total))
    if accelerator.is_main_process and log:
        plot_curve(log, run_dir / "loss_curve.png")
    accelerator.end_training()
    return last_val


__all__ = ["TrainConfig", "train", "plot_curve"]  # TrainConfig lives in training.config
