"""IDF-CR's latent stage: three training tasks run by :func:`cloudrm.training.loop.train`.

``autoencoder``  diffusers ``AutoencoderKL`` (f = 4), L1 + a small KL, on clear crops (RICE labels of the train
                 split + AID). Validation: reconstruction PSNR/SSIM of the validation split's clear labels — the
                 ceiling of everything after it. On export the latent statistics are measured on training crops
                 and written into the VAE's config (``shift_factor`` = mean, ``scaling_factor`` = 1/std).
``prior``        ``UNet2DConditionModel`` without cross-attention, epsilon prediction, scaled_linear betas
                 0.00085-0.012, T = 1000, on standardised latents of clear crops (the trained VAE, frozen).
                 Validation: ``psnr`` = one-step denoising PSNR in pixel space (x0 from the predicted noise at
                 t = 100, 250, 500, decoded) and ``eps_mse`` over a fixed t grid. Frozen afterwards.
``controlnet``   ``ControlNetModel.from_unet(prior)`` conditioned on the latent of the (frozen) Pixel-CR output,
                 trained with INR (Algorithm 3, ``task_options.inr`` = K, CLI ``--inr``); exported to
                 ``controlnet_k{K}``. Only the ControlNet trains. Validation: the whole pipeline (val sampler,
                 few steps) — PSNR, SSIM and NIQE on the validation pairs.

The parts another part needs (Pixel-CR, VAE, prior) come from ``task_options.components`` (a weights folder;
default: this run's export folder, where the earlier tasks exported them). Weights are stored in fp16
(``task_options.storage_dtype``) to keep the bundled folders small; they load back in fp32.

Equal budget across K: every ControlNet starts from the same ControlNet — ``from_unet(prior)`` with the config's
seed (zero convs are zero; the rest is the prior's copy), or one ControlNet in the ``init_from`` folder named by
``task_options.init_subfolder`` — and sees the same number of batches (``stop_at_step``) in the same order (same
seed); K only changes the passes taken per batch. Each K needs its own ``--run-dir`` (checked).
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

from ... import metrics, weights
from ...datasets import Source, TrainMixture, augment, resize_to
from ...errors import ConfigError, WeightsError
from ...models.blocks import pad_to_multiple
from ...models.pixel_cr import PixelCR
from ...pipelines import idfcr as M
from ...pipelines.pixelcr import pixel_cr_forward
from .base import Task, average_groups

AE_DEFAULTS: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[32, 64, 128], layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=128,
    mid_block_add_attention=False)
PRIOR_DEFAULTS: dict[str, Any] = dict(
    sample_size=32, down_block_types=["DownBlock2D"] * 3, up_block_types=["UpBlock2D"] * 3,
    mid_block_type="UNetMidBlock2D", block_out_channels=[32, 64, 128], layers_per_block=1, norm_num_groups=16,
    cross_attention_dim=32)
CONTROLNET_DEFAULTS: dict[str, Any] = dict(conditioning_embedding_out_channels=[16])


# ----------------------------------------------------------------------------------------------- data
class ClearCrops(TrainMixture):
    """Clear images only (no clouds): ``target`` (3, crop, crop) in [0,1]; same sources and split as
    :class:`TrainMixture` (a RICE ``label`` folder contributes its train split only)."""

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        img = resize_to(self.clear[int(rng.integers(len(self.clear)))].astype(np.float32) / 255, self.crop)
        (img,) = augment([img], rng, self.crop)
        return {"target": torch.from_numpy(img.astype(np.float32))}


# ----------------------------------------------------------------------------------------------- INR
def q_sample(z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """f(z0, eps) = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps (the forward process of the sampler's schedule)."""
    ab = alphas_cumprod.to(z0.device)[t].float().view(-1, *([1] * (z0.ndim - 1)))
    return ab.sqrt() * z0 + (1 - ab).sqrt() * eps.to(z0.dtype)


def inr_passes(eps_model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], z0: torch.Tensor,
               cond: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, k: int,
               optimizer_step: Callable[[torch.Tensor], None], alphas_cumprod: torch.Tensor,
               trace: list | None = None) -> list[float]:
    """Iterative Noise Refinement, Algorithm 3, on one batch; returns the K losses.

        theta_0 = theta
        for k = 0..K-1:
            z_t   = f(z0, eps)                          # z0, cond and t fixed for the batch
            pred  = eps_theta_k(z_t, t, cond)
            loss  = ||pred - eps||^2 ; optimiser step    # theta_k -> theta_{k+1}
            eps   = pred.detach()                       # theta_k's prediction (before its step) is the next noise

    K = 1 is ordinary noise-prediction training. ``optimizer_step(loss)`` does backward, step and zero_grad.
    ``trace`` (a list) receives, per pass, the target noise and the prediction (for tests).
    """
    losses = []
    eps = eps.detach().float()
    for _ in range(k):
        z_t = q_sample(z0, t, eps, alphas_cumprod)
        pred = eps_model(z_t, t, cond)
        loss = F.mse_loss(pred.float(), eps)
        optimizer_step(loss)
        if trace is not None:
            trace.append({"target": eps, "pred": pred.detach().float()})
        eps = pred.detach().float()
        losses.append(float(loss.detach()))
    return losses


# ----------------------------------------------------------------------------------------------- shared
class _AEWithKL(torch.nn.Module):
    """Training wrapper (so DDP sees one forward): x in [-1,1] -> (reconstruction, KL per sample)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor):
        post = self.vae.encode(x).latent_dist
        return self.vae.decode(post.sample()).sample, post.kl()


def _unwrap_vae(model):
    return model.vae if isinstance(model, _AEWithKL) else model


def _fingerprint(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha1()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


class LatentTask(Task):
    """Common parts: the components folder, frozen parts on the right device, autocast, fp16 export."""

    weights_dir, method = "idfcr", "idf-cr"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.frozen: dict[str, torch.nn.Module] = {}
        self._device = None

    # -- the folder with the parts this task builds on
    def components_dir(self) -> Path:
        c = self.cfg.task_options.get("components")
        if c:
            return Path(c)
        return self.cfg.path(self.cfg.export_dir, self.weights_dir)

    def load_frozen(self, name: str, cls) -> torch.nn.Module:
        folder = self.components_dir()
        meta = weights.read_meta(folder)
        comp = (meta.get("components") or {}).get(name) or {}
        if not (folder / name / "config.json").exists() and not (comp.get("hub") or comp.get("folder")):
            raise WeightsError(f"{folder / name}: missing; train the '{name}' part first "
                               f"(or set task_options.components to a folder that has it)")
        if cls.__name__ == "PixelCR":
            model = weights.load_model(cls, folder, name).float()
        else:
            model = weights.load_component(cls, folder, name, meta)
        model.requires_grad_(False).eval()
        self.frozen[name] = model
        return model

    def done_before(self, folder: Path, subfolder: str | None = None) -> dict[str, Any]:
        """What ``load_init`` returns to the loop: the shipped part's steps, seconds and best validation."""
        info = (weights.read_meta(folder).get("components") or {}).get(subfolder or self.subfolder, {})
        return {"step": int(info.get("trained_steps", 0)), "seconds": 60.0 * float(info.get("train_minutes", 0.0)),
                "best": float((info.get("validation") or {}).get("psnr", -1.0))}

    def to_device(self, device) -> None:
        if self._device != device:
            for m in self.frozen.values():
                m.to(device)
            self._device = device

    def clear_dataset(self):
        d = self.cfg.data
        self._train_ds = ClearCrops(self.root, Source(clear=d.get("clear", ())), crop=d.get("crop", 128),
                                    p_real=0.0, length=d.get("length", 100_000), seed=self.cfg.seed)
        return self._train_ds

    def _optimise(self, loss, optimizer, accelerator, params, grad_clip) -> None:
        accelerator.backward(loss)
        if grad_clip and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def train_step(self, model, batch, optimizer, accelerator, params, grad_clip) -> float:
        self.to_device(accelerator.device)
        with accelerator.autocast():
            loss = self.loss(model, batch)
        self._optimise(loss, optimizer, accelerator, params, grad_clip)
        return loss.detach().item()

    def val_targets(self) -> list[dict]:
        if not hasattr(self, "_val"):
            self._val = self.val_items()
        return self._val

    # -- export: fp16 files, metadata under components/<subfolder>
    def export(self, model, folder: Path, meta: dict[str, Any]) -> None:
        net = self.export_model(model)
        dtype = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[
            self.cfg.task_options.get("storage_dtype", "float16")]
        store = copy.deepcopy(net)
        for t in list(store.parameters()) + list(store.buffers()):  # (ModelMixin.to() warns about fp16 casts)
            if t.is_floating_point():
                t.data = t.data.to(dtype)
        super().export(store, folder, meta)
        info = weights.read_meta(folder)
        comp = info["components"][self.subfolder]
        comp["params"] = int(sum(p.numel() for p in net.parameters()))
        comp["storage_dtype"] = str(dtype).replace("torch.", "")
        comp["produced_by"] = f"python -m cloudrm train {self.cfg.task} --config ... (cloudrm)"
        comp.update(self.extra_meta(net))
        weights.write_meta(folder, info)

    def export_model(self, model):
        return model

    def extra_meta(self, net) -> dict[str, Any]:
        return {}


# ----------------------------------------------------------------------------------------------- autoencoder
class AutoencoderTask(LatentTask):
    """AutoencoderKL (f = 4, 3 levels, 4 latent channels) on clear images; L1 + kl_weight * KL."""

    subfolder = "vae"

    @property
    def decoder_only(self) -> bool:
        """``task_options.train: "decoder"``: fine-tune only the decoder of ``init_from``'s VAE. The encoder, and
        so the latent space the prior and ControlNets were trained in, stays exactly as it was: a VAE adapted to
        another dataset's detail can replace the old one under the same prior and ControlNets."""
        part = self.cfg.task_options.get("train", "all")
        if part not in ("all", "decoder"):
            raise ConfigError(f"task_options.train must be 'all' or 'decoder', got {part!r}")
        if part == "decoder" and not self.cfg.init_from:
            raise ConfigError("task_options.train 'decoder' fine-tunes a trained VAE: set init_from")
        return part == "decoder"

    def build_model(self):
        vae = AutoencoderKL(**{**AE_DEFAULTS, **self.cfg.model})
        if self.decoder_only:
            vae.encoder.requires_grad_(False)
            vae.quant_conv.requires_grad_(False)
            # the latent scaling of the VAE being fine-tuned, also when the run resumes from a checkpoint
            # (load_state restores weights, not the config)
            src = AutoencoderKL.load_config(str(Path(self.cfg.init_from).expanduser() / self.subfolder))
            vae.register_to_config(scaling_factor=src["scaling_factor"], shift_factor=src.get("shift_factor"))
        return _AEWithKL(vae)

    def load_init(self, model, folder: Path) -> dict[str, Any]:
        src = weights.load_model(AutoencoderKL, folder, self.subfolder).float()
        model.vae.load_state_dict(src.state_dict())
        model.vae.register_to_config(scaling_factor=src.config.scaling_factor, shift_factor=src.config.shift_factor)
        return self.done_before(folder)

    def train_dataset(self):
        return self.clear_dataset()

    def loss(self, model, batch):
        x = batch["target"] * 2 - 1
        rec, kl = model(x)
        # Stable Diffusion's weighting: rec = sum |x - x'| per image, + kl_weight * KL (summed over the latent);
        # here both are divided by the pixels per image, so the L1 is a plain mean
        l1 = F.l1_loss(rec.float(), x)
        return l1 + self.cfg.task_options.get("kl_weight", 1e-6) * kl.float().mean() / x[0].numel()

    @torch.no_grad()
    def reconstruct(self, vae, image: torch.Tensor) -> torch.Tensor:
        """(3,H,W) in [0,1] -> reconstruction through the posterior mean (what IDF-CR decodes)."""
        dev = next(vae.parameters()).device
        x, (h, w) = pad_to_multiple(image[None].to(dev), M.vae_factor(vae))
        mean = vae.encode(x * 2 - 1).latent_dist.mean
        return ((vae.decode(mean).sample + 1) / 2).clamp(0, 1)[0, :, :h, :w].float().cpu()

    def validate(self, model) -> dict[str, float]:
        vae = _unwrap_vae(model)
        t0 = time.time()
        groups: dict[str, list[dict[str, float]]] = {}
        for it in self.val_targets():
            tgt = it["target"]
            out = self.reconstruct(vae, torch.from_numpy(tgt)).numpy()
            groups.setdefault(it["group"], []).append({"recon_psnr": metrics.psnr(tgt, out),
                                                       "recon_ssim": metrics.ssim(tgt, out)})
        res = average_groups(groups, main="recon_psnr")
        res["val_seconds"] = round(time.time() - t0, 1)
        return res

    @torch.no_grad()
    def latent_statistics(self, vae, n: int = 64) -> tuple[float, float]:
        """Mean and std of the posterior-mean latents of ``n`` fixed training crops (else validation labels)."""
        dev = next(vae.parameters()).device
        ds = getattr(self, "_train_ds", None)
        if ds is not None:
            epoch = ds.epoch
            ds.set_epoch(0)
            imgs = [ds[i]["target"] for i in range(n)]
            ds.set_epoch(epoch)
        else:
            imgs = [torch.from_numpy(it["target"]) for it in self.val_targets()[:n]]
        zs = []
        for i in range(0, len(imgs), 8):
            x = torch.stack(imgs[i:i + 8]).to(dev)
            x, _ = pad_to_multiple(x, M.vae_factor(vae))
            zs.append(vae.encode(x * 2 - 1).latent_dist.mean.float().cpu())
        z = torch.cat(zs)
        return float(z.mean()), float(z.std())

    def export_model(self, model):
        vae = _unwrap_vae(model)
        if self.decoder_only:  # same encoder: keep the latent scaling the prior was trained with
            return vae
        was_training = vae.training
        vae.eval()
        mean, std = self.latent_statistics(vae)
        vae.train(was_training)
        vae.register_to_config(scaling_factor=round(1.0 / max(std, 1e-6), 6), shift_factor=round(mean, 6))
        return vae

    def extra_meta(self, net) -> dict[str, Any]:
        return {"latent_scaling_factor": net.config.scaling_factor, "latent_shift_factor": net.config.shift_factor,
                "downsampling": M.vae_factor(net), "kl_weight": self.cfg.task_options.get("kl_weight", 1e-6),
                "trained_part": "decoder" if self.decoder_only else "all",
                "note": "validation psnr = reconstruction PSNR of the validation split's clear labels"}


# ----------------------------------------------------------------------------------------------- prior
class PriorTask(LatentTask):
    """The latent diffusion prior: epsilon prediction on standardised clear latents; frozen afterwards."""

    subfolder = "prior"

    def build_model(self):
        vae = self.load_frozen("vae", AutoencoderKL)
        sched = M.make_scheduler("ddpm")
        self.alphas_cumprod = sched.alphas_cumprod.float()
        self.T = len(self.alphas_cumprod)
        c = vae.config.latent_channels
        return UNet2DConditionModel(**{**PRIOR_DEFAULTS, **self.cfg.model, "in_channels": c, "out_channels": c})

    def load_init(self, model, folder: Path) -> dict[str, Any]:
        model.load_state_dict(weights.load_model(UNet2DConditionModel, folder, self.subfolder).float().state_dict())
        return self.done_before(folder)

    def train_dataset(self):
        return self.clear_dataset()

    def loss(self, model, batch):
        vae = self.frozen["vae"]
        with torch.no_grad():
            z0 = M.encode(vae, batch["target"].to(next(vae.parameters()).device))
        t = torch.randint(0, self.T, (z0.shape[0],), device=z0.device)
        eps = torch.randn_like(z0)
        z_t = q_sample(z0, t, eps, self.alphas_cumprod)
        return F.mse_loss(model(z_t, t, encoder_hidden_states=None).sample.float(), eps)

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        vae = self.frozen["vae"]
        dev = next(model.parameters()).device
        self.to_device(dev)
        t0 = time.time()
        if not hasattr(self, "_val_latents"):
            items = self.val_targets()
            self._val_latents = [(it["target"], M.encode(vae, pad_to_multiple(
                torch.from_numpy(it["target"])[None].to(dev), M.vae_factor(vae) * M.unet_multiple(model))[0]))
                for it in items]
        gen = torch.Generator().manual_seed(1234)
        grid = torch.linspace(20, self.T - 20, 8).long()
        mses, psnrs = [], []
        ac = self.alphas_cumprod.to(dev)
        for tgt, z0 in self._val_latents:
            for ti in grid:
                eps = torch.randn(z0.shape, generator=gen).to(dev)
                t = ti.view(1).to(dev)
                pred = model(q_sample(z0, t, eps, ac), t, encoder_hidden_states=None).sample.float()
                mses.append(float(F.mse_loss(pred, eps)))
            h, w = tgt.shape[-2:]
            for tv in (100, 250, 500):
                eps = torch.randn(z0.shape, generator=gen).to(dev)
                t = torch.tensor([tv], device=dev)
                z_t = q_sample(z0, t, eps, ac)
                pred = model(z_t, t, encoder_hidden_states=None).sample.float()
                ab = ac[tv]
                x0 = (z_t - (1 - ab).sqrt() * pred) / ab.sqrt()
                out = M.decode(vae, x0)[0, :, :h, :w].cpu().numpy()
                psnrs.append(metrics.psnr(tgt, out))
        res = {"eps_mse": round(float(np.mean(mses)), 5) if mses else None,
               "psnr": round(float(np.mean(psnrs)), 3) if psnrs else None,
               "n": len(self._val_latents), "val_seconds": round(time.time() - t0, 1)}
        return {k: v for k, v in res.items() if v is not None}

    def extra_meta(self, net) -> dict[str, Any]:
        vae = self.frozen["vae"]
        return {"prediction_type": "epsilon", **M.BETA_SCHEDULE,
                "vae_scaling_factor": vae.config.scaling_factor, "vae_shift_factor": vae.config.shift_factor,
                "vae_fingerprint": _fingerprint(self.components_dir() / "vae"),
                "note": "validation psnr = one-step denoising PSNR (t = 100, 250, 500, decoded), eps_mse over t"}


# ----------------------------------------------------------------------------------------------- controlnet
class ControlNetTask(LatentTask):
    """ControlNet on the frozen prior, conditioned on the latent of the frozen Pixel-CR's output; INR K."""

    subfolder = "controlnet_k3"

    def __init__(self, cfg):
        super().__init__(cfg)
        k = cfg.task_options.get("inr", M.DEFAULT_INR)
        if isinstance(k, bool) or not isinstance(k, int) or k not in M.INR_CHOICES:
            raise ConfigError(f"INR K must be 1, 2 or 3, got {k!r}")
        if k > 1 and cfg.grad_accum != 1:
            raise ConfigError("INR with K > 1 takes one optimiser step per pass: use grad_accum 1")
        self.k = k
        cfg.task_options["inr"] = k  # the default K, written down: run folders ({inr}) and metadata agree on it
        self.subfolder = f"controlnet_k{k}"
        self._check_run_dir()

    def _check_run_dir(self) -> None:
        """One run folder per K: resuming a K=1 checkpoint as K=3 would silently break the equal budget."""
        run_dir = self.cfg.path(self.cfg.run_dir, self.weights_dir)
        marker = run_dir / "inr.json"
        if marker.exists():
            k = json.loads(marker.read_text()).get("inr")
            if k != self.k:
                raise ConfigError(f"{run_dir} holds a K={k} ControlNet run; give K={self.k} its own --run-dir")
        elif run_dir.exists() and any(run_dir.glob("checkpoint-*")):
            raise ConfigError(f"{run_dir} holds checkpoints of an unknown K; give K={self.k} its own --run-dir")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"inr": self.k}))

    def build_model(self):
        self.load_frozen("pixel_cr", PixelCR)
        vae = self.load_frozen("vae", AutoencoderKL)
        prior = self.load_frozen("prior", UNet2DConditionModel)
        self.alphas_cumprod = M.make_scheduler("ddpm").alphas_cumprod.float()
        self.T = len(self.alphas_cumprod)
        opts = {**CONTROLNET_DEFAULTS, **self.cfg.model}
        # the common start: a copy of the prior's encoder + middle, zero convs (deterministic given the seed)
        return ControlNetModel.from_unet(
            prior, conditioning_embedding_out_channels=tuple(opts["conditioning_embedding_out_channels"]),
            conditioning_channels=vae.config.latent_channels)

    @property
    def init_subfolder(self) -> str:
        """The subfolder of ``init_from`` to start from: ``task_options.init_subfolder`` (e.g. one common
        ControlNet for every K) or this K's own ``controlnet_k{K}`` (fine-tuning the shipped one)."""
        return self.cfg.task_options.get("init_subfolder") or self.subfolder

    def load_init(self, model, folder: Path) -> dict[str, Any]:
        """Start from ``init_from``'s ControlNet. Its step count is kept (give every K the same
        ``--stop-at-step`` = start steps + budget); a common start from another subfolder does not carry its
        validation score, so this K's first validation always exports."""
        name = self.init_subfolder
        if not (folder / name / "config.json").exists():
            raise ConfigError(f"{folder / name}: no ControlNet to start from")
        src = weights.load_model(ControlNetModel, folder, name).float()
        model.load_state_dict(src.state_dict())
        self.init_source = str(folder / name)
        done = self.done_before(folder, name)
        if name != self.subfolder:
            done["best"] = -1.0
        return done

    def train_dataset(self):
        self._train_ds = super().train_dataset()
        return self._train_ds

    @torch.no_grad()
    def latents(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(z0 of the clear target, condition latent of the frozen Pixel-CR's output on the cloudy input)."""
        pcr, vae = self.frozen["pixel_cr"], self.frozen["vae"]
        dev = next(vae.parameters()).device
        cloudy = batch["dates"][:, 0].to(dev)
        pixel_out = pcr(cloudy)[0].clamp(0, 1)
        return M.encode(vae, batch["target"].to(dev)), M.encode(vae, pixel_out)

    def eps_model(self, model):
        prior = self.frozen["prior"]
        return lambda z_t, t, cond: M.controlled_eps(prior, model, z_t, t, cond)

    def train_step(self, model, batch, optimizer, accelerator, params, grad_clip) -> float:
        """One batch of Algorithm 3: K passes, K optimiser steps (the loop counts one step per batch).
        Returns the first pass's loss (plain denoising loss, comparable across K)."""
        self.to_device(accelerator.device)
        with accelerator.autocast():
            z0, cond = self.latents(batch)
        t = torch.randint(0, self.T, (z0.shape[0],), device=z0.device)
        eps = torch.randn_like(z0)
        eps_model = self.eps_model(model)

        def step(loss):
            self._optimise(loss, optimizer, accelerator, params, grad_clip)

        def autocast_eps(z_t, t_, c):
            with accelerator.autocast():
                return eps_model(z_t, t_, c)

        losses = inr_passes(autocast_eps, z0, cond, t, eps, self.k, step, self.alphas_cumprod)
        return losses[0]

    def predict(self, model, dates: torch.Tensor) -> torch.Tensor:
        dev = next(model.parameters()).device
        self.to_device(dev)
        opts = self.cfg.task_options
        pixel_out, _ = pixel_cr_forward(self.frozen["pixel_cr"], dates[0])
        gen = torch.Generator("cpu").manual_seed(0)
        out = M.idfcr_sample(self.frozen["vae"], self.frozen["prior"], model, pixel_out[None],
                             sampler=opts.get("val_sampler", "ddim"), steps=opts.get("val_steps", 10),
                             generator=gen, fix_color=opts.get("color_fix", True),
                             color_fix_sigma=opts.get("color_fix_sigma", M.DEFAULT_COLOR_FIX_SIGMA))
        return out[0]

    def validate(self, model) -> dict[str, float]:
        t0 = time.time()
        groups: dict[str, list[dict[str, float | None]]] = {}
        for it in self.val_targets():
            out = self.predict(model, torch.from_numpy(it["dates"])).numpy()
            nq = metrics.niqe(out) if self.cfg.task_options.get("val_niqe", True) else None
            groups.setdefault(it["group"], []).append({"psnr": metrics.psnr(it["target"], out),
                                                       "ssim": metrics.ssim(it["target"], out), "niqe": nq})
        res = average_groups(groups)
        res["val_seconds"] = round(time.time() - t0, 1)
        return res

    def extra_meta(self, net) -> dict[str, Any]:
        opts = self.cfg.task_options
        return {"inr": self.k, "condition": "VAE latent (posterior mean) of the Pixel-CR output, added at conv_in",
                "init_from": getattr(self, "init_source", "ControlNetModel.from_unet(prior), seed "
                                     f"{self.cfg.seed}"),
                "prior_fingerprint": _fingerprint(self.components_dir() / "prior"),
                "validation_sampler": f"{opts.get('val_sampler', 'ddim')} {opts.get('val_steps', 10)} steps, "
                                      f"colour fix {M.color_fix_mode(opts.get('color_fix', True))}"}
