"""IDF-CR: Pixel-CR (stage 1) then iterative noise diffusion in a latent space (stage 2).

    y_pcr, cloud = PixelCR(x)                                   # pixel space, one pass
    c   = E(y_pcr)                                             # condition latent (VAE encoder, posterior mean)
    z_T ~ N(0, I)
    for t in scheduler.timesteps:                               # sampling.sample (DDPM 50 by default)
        r_down, r_mid = ControlNet_K(z_t, t, c)                 # trainable copy of the prior's encoder + middle
        eps = prior(z_t, t, + r_down, + r_mid)                  # FROZEN latent prior, epsilon prediction
        z_{t-1} = scheduler.step(eps, t, z_t)
    y = D(z_0)                                                 # VAE decoder
    y = y - lowpass(y) + lowpass(y_pcr)                        # colour fix "lowpass" (or "residual", "none")

Design choices (the paper and the official code differ; both are stated in ``docs``):

* **Latent autoencoder: diffusers ``AutoencoderKL``, not ``VQModel``.** The paper describes a VQ-VAE with a
  codebook lookup, but the official code uses Stable Diffusion's ``AutoencoderKL`` (continuous latents, a small
  KL term). A continuous latent reconstructs better than a quantised one at the same size and training time
  (no codebook collapse or commitment loss to tune on a CPU budget), the reconstruction PSNR bounds everything
  after it, and it is the interface a hub Stable Diffusion VAE has, so the paper-scale path is the same code.
  Latents are standardised: ``z = (mean - shift_factor) * scaling_factor`` with both numbers measured on
  training latents (``scaling_factor`` = 1/std) and stored in the VAE's own config.
* **Condition = the latent of the Pixel-CR output, entering at the first conv.** The official code
  concatenates the condition latent with the noisy latent at the ControlNet's first convolution. diffusers'
  ``ControlNetModel`` adds ``conv_out(embed(cond))`` to ``conv_in(z_t)``; with a one-entry
  ``conditioning_embedding_out_channels`` the embedding does not downsample, so the condition is given at the
  latent size and the sum is exactly "concatenate, then convolve" (plus a small non-linear embedding) — and its
  output conv is zero-initialised, so a fresh ControlNet leaves the frozen prior unchanged. Feeding the
  Pixel-CR image (a 2-level strided embedding) would also fit diffusers, but the latent is what the paper and
  the issue describe, costs one encoder pass per image, and works unchanged with a hub VAE (f = 8).
* **Colour fix** (``color_fix`` in ``cloudrm.json``): the latent stage is bounded by the autoencoder's
  reconstruction, so its output is re-anchored on the Pixel-CR output ``y_pcr``:

  - ``"lowpass"`` (the official demo's wavelet fix does the same job): the output's low frequencies (a Gaussian
    low-pass, ``color_fix_sigma`` px) are replaced by those of ``y_pcr``; the diffusion keeps only the detail.
  - ``"residual"``: ``y = y_pcr + highpass(D(z_0) - D(E(y_pcr)))``: only what the diffusion *changed* is
    added to ``y_pcr``. The autoencoder's own blur appears in both decodes and cancels, so where the diffusion
    agrees with its condition the output is exactly ``y_pcr``.
  - ``"none"``: ``D(z_0)`` as the paper describes it.

  (``residual`` also drops the low frequencies of the change, ``color_fix_sigma`` px, so the colours stay
  Pixel-CR's.)
* **Start** (``strength`` in ``cloudrm.json``, default 1 = the paper's pure noise): below 1, sampling starts
  from the condition latent noised to that fraction of the schedule (SDEdit; diffusers' img2img ``strength``)
  and runs only that fraction of the steps.

Weights folder (``cloudrm/bundled_weights/idfcr/<variant>/``): ``pixel_cr/ vae/ prior/ controlnet_k1/ controlnet_k2/
controlnet_k3/`` and one ``cloudrm.json`` (method ``idf-cr``; per-part metadata under ``components``).
``controlnet_k{K}`` is the ControlNet trained with K INR passes per batch; ``inr`` (1, 2, 3; default 3)
picks it. Paper-scale path: a component entry ``{"hub": "owner/name[@rev]", "subfolder": "vae"}`` in
``cloudrm.json`` (and no local ``vae/``/``prior/`` folder) loads a hub Stable Diffusion VAE / U-Net with
``from_pretrained``; offline it fails with one line. A cross-attention U-Net gets a zero text embedding
(the unconditional branch) unless the component names a ``null_embedding`` file (.safetensors, key ``emb``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import sampling, weights
from ..errors import ConfigError, WeightsError, one_line
from ..models.blocks import pad_to_multiple
from .base import Method, ProgressFn, as_dates
from .pixelcr import pixel_cr_forward

#: the latent prior's training schedule (latent-diffusion's "linear" = diffusers' "scaled_linear")
BETA_SCHEDULE = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
INR_CHOICES = (1, 2, 3)
DEFAULT_INR = 3
DEFAULT_COLOR_FIX_SIGMA = 3.0


def make_scheduler(sampler: str):
    """The one scheduler factory (sampling layer) with the prior's schedule and epsilon prediction."""
    return sampling.make_scheduler(sampler, prediction_type="epsilon", **BETA_SCHEDULE)


# ----------------------------------------------------------------------------------------------- latents
def vae_factor(vae) -> int:
    """Spatial down-sampling factor f of an AutoencoderKL (2^(levels-1))."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def unet_multiple(unet) -> int:
    """The latent side must be a multiple of this (one halving per down block but the last)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def latent_stats(vae) -> tuple[float, float]:
    """(shift, scale): z = (mean - shift) * scale. A hub SD VAE has scale 0.18215 and no shift."""
    return float(vae.config.get("shift_factor") or 0.0), float(vae.config.get("scaling_factor") or 1.0)


def encode(vae, image: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> standardised latent (posterior mean; deterministic)."""
    shift, scale = latent_stats(vae)
    dtype = next(vae.parameters()).dtype
    mean = vae.encode((image * 2 - 1).to(dtype)).latent_dist.mean
    return ((mean.float() - shift) * scale)


def decode(vae, z: torch.Tensor) -> torch.Tensor:
    """Standardised latent -> (B,3,H,W) image in [0,1]."""
    shift, scale = latent_stats(vae)
    dtype = next(vae.parameters()).dtype
    x = vae.decode((z / scale + shift).to(dtype)).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


def text_context(unet, batch: int, null_embedding: torch.Tensor | None = None) -> torch.Tensor | None:
    """``encoder_hidden_states`` for the prior/ControlNet: None without cross-attention (the cloudrm prior),
    else the unconditional embedding (given, or zeros) for a hub Stable Diffusion U-Net."""
    types = tuple(unet.config.down_block_types) + (unet.config.mid_block_type or "",)
    if not any("CrossAttn" in t for t in types):
        return None
    p = next(unet.parameters())
    if null_embedding is not None:
        return null_embedding.to(p.device, p.dtype).expand(batch, -1, -1)
    return torch.zeros(batch, 1, unet.config.cross_attention_dim, device=p.device, dtype=p.dtype)


def controlled_eps(prior, controlnet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                   context: torch.Tensor | None = None) -> torch.Tensor:
    """One evaluation of the frozen prior steered by the ControlNet: the predicted noise eps_theta(z_t, t, c)."""
    b = z_t.shape[0]
    t = torch.as_tensor(t, device=z_t.device)
    t = t.expand(b) if t.ndim == 0 else t
    down, mid = controlnet(z_t, t, encoder_hidden_states=context, controlnet_cond=cond, return_dict=False)
    return prior(z_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                 mid_block_additional_residual=mid).sample


# ----------------------------------------------------------------------------------------------- colour fix
def gaussian_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,C,H,W), reflect padding (replicate where the image is too small)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    h, w = x.shape[-2:]
    mode = "reflect" if radius < min(h, w) else "replicate"
    y = F.pad(x, (radius, radius, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


COLOR_FIX_MODES = ("lowpass", "residual", "none")


def color_fix_mode(value: Any) -> str:
    """``cloudrm.json``'s ``color_fix``: a mode name, or true/false (older folders) for lowpass/none."""
    if value is True or value is None:
        return "lowpass"
    if value is False:
        return "none"
    if value not in COLOR_FIX_MODES:
        raise ConfigError(f"color_fix must be one of {', '.join(COLOR_FIX_MODES)}, got {value!r}")
    return value


def color_fix(out: torch.Tensor, reference: torch.Tensor, sigma: float = DEFAULT_COLOR_FIX_SIGMA) -> torch.Tensor:
    """Keep ``reference``'s (Pixel-CR's) low frequencies and ``out``'s high frequencies (B,C,H,W) in [0,1]."""
    if sigma <= 0:
        return out
    return (out - gaussian_lowpass(out, sigma) + gaussian_lowpass(reference, sigma)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------- the pipeline
@torch.no_grad()
def idfcr_sample(vae, prior, controlnet, pixel_out: torch.Tensor, *, sampler: str = "ddpm", steps: int = 50,
                 generator: torch.Generator, progress: ProgressFn | None = None, fix_color: bool | str = True,
                 color_fix_sigma: float = DEFAULT_COLOR_FIX_SIGMA,
                 null_embedding: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
    """Stage 2 on Pixel-CR outputs (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1]; any H, W (padded, cropped back)."""
    sampling.check_sampler(sampler, steps)
    device = next(prior.parameters()).device
    b, _, h, w = pixel_out.shape
    multiple = vae_factor(vae) * unet_multiple(prior)
    xp, _ = pad_to_multiple(pixel_out.to(device), multiple)
    cond = encode(vae, xp)
    dtype = next(prior.parameters()).dtype
    context = text_context(prior, b, null_embedding)
    noise = sampling.randn(cond.shape, generator, device)

    def model_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return controlled_eps(prior, controlnet, z_t.to(dtype), t, cond.to(dtype), context).float()

    z0 = sampling.sample(model_fn, make_scheduler(sampler), noise, steps=steps, generator=generator,
                         progress=progress, init=cond, strength=strength)
    mode = color_fix_mode(fix_color)
    out = decode(vae, z0)
    ref = pixel_out.to(out.device).float()
    if mode == "residual":
        # ref + highpass(delta): color_fix keeps ref's low frequencies, so only delta's detail is added
        out = color_fix(ref + (out - decode(vae, cond))[..., :h, :w], ref, color_fix_sigma)
    elif mode == "lowpass":
        out = color_fix(out[..., :h, :w], ref, color_fix_sigma)
    else:
        out = out[..., :h, :w]
    return out.float().cpu()


# ----------------------------------------------------------------------------------------------- loading
def _first_line(exc: BaseException) -> str:
    return one_line(exc)[:160]


def load_component(cls, folder: Path, name: str, meta: dict[str, Any]):
    """A part of the weights folder: ``folder/name`` (save_pretrained), the same part of another folder named
    (relative to this one) by the metadata's ``{"folder": ...}``, or a hub id given in the metadata.

    Local weights may be stored in fp16 (size budget); they are returned in fp32 for CPU inference.
    """
    comp = (meta.get("components") or {}).get(name) or {}
    if (folder / name / "config.json").exists() or not (comp.get("folder") or comp.get("hub")):
        return weights.load_model(cls, folder, name)  # a missing part raises here, naming its folder
    if comp.get("folder"):
        # another bundled variant's part, e.g. rice1 uses rice2's VAE and prior: {"folder": "../rice2"}
        return weights.load_model(cls, (folder / comp["folder"]).resolve(), name)
    hub = comp["hub"]
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    repo, _, rev = str(hub).partition("@")
    try:
        model = cls.from_pretrained(repo, subfolder=comp.get("subfolder"), revision=rev or None)
    except Exception as exc:  # offline, missing, auth: one line
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        offline = " while offline (HF_HUB_OFFLINE is set)" if offline else ""
        raise WeightsError(f"{name}: '{hub}' could not be loaded from the Hugging Face Hub{offline} "
                           f"({_first_line(exc)})") from None
    return model.eval().float()


def load_null_embedding(folder: Path, meta: dict[str, Any]) -> torch.Tensor | None:
    rel = ((meta.get("components") or {}).get("prior") or {}).get("null_embedding")
    if not rel:
        return None
    path = folder / rel
    try:
        from safetensors.torch import load_file
        return load_file(str(path))["emb"].float()
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load the unconditional text embedding ({_first_line(exc)})") from None


class IDFCR(Method):
    """Pixel-CR, then the latent ControlNet-steered prior; ``inr`` picks ``controlnet_k{K}``."""

    name = "idf-cr"
    max_dates = 1
    stochastic = True
    default_sampler = "ddpm"
    default_steps = 50

    def __init__(self, weights_spec: str | None = None, device=None):
        super().__init__(weights_spec, device)
        from diffusers import AutoencoderKL, UNet2DConditionModel

        from ..models.pixel_cr import PixelCR

        self.folder, self.weights_id = weights.resolve("idf-cr", weights_spec)
        self.meta = weights.check_method(self.folder, "idf-cr")
        self.pixel_cr = weights.load_model(PixelCR, self.folder, "pixel_cr").float().to(self.device)
        self.vae = load_component(AutoencoderKL, self.folder, "vae", self.meta).to(self.device)
        self.prior = load_component(UNet2DConditionModel, self.folder, "prior", self.meta).to(self.device)
        self.prior.requires_grad_(False)
        self.vae.requires_grad_(False)
        if self.prior.config.in_channels != self.vae.config.latent_channels:
            raise WeightsError(f"{self.folder / 'prior'}: expects {self.prior.config.in_channels}-channel latents, but "
                               f"the VAE makes {self.vae.config.latent_channels}; the parts do not belong together")
        self.null_embedding = load_null_embedding(self.folder, self.meta)
        self.color_fix = color_fix_mode(self.meta.get("color_fix", True))
        self.color_fix_sigma = float(self.meta.get("color_fix_sigma", DEFAULT_COLOR_FIX_SIGMA))
        self.strength = float(self.meta.get("strength", 1.0))
        if not 0.0 < self.strength <= 1.0:
            raise WeightsError(f"{self.folder / 'cloudrm.json'}: strength must be in (0, 1], got {self.strength}")
        self.controlnets: dict[int, torch.nn.Module] = {}
        self.controlnet: torch.nn.Module | None = None  # the last one used (counted by ``bench``)

    def get_controlnet(self, k: int):
        """The ControlNet trained with K INR passes (loaded on first use; a missing one names its folder)."""
        if k not in INR_CHOICES:
            raise ConfigError(f"INR K must be 1, 2 or 3, got {k}")
        with self._lock:
            if k not in self.controlnets:
                from diffusers import ControlNetModel

                net = load_component(ControlNetModel, self.folder, f"controlnet_k{k}", self.meta).to(self.device)
                net.requires_grad_(False)
                if (tuple(net.config.block_out_channels) != tuple(self.prior.config.block_out_channels)
                        or net.config.layers_per_block != self.prior.config.layers_per_block
                        or net.config.conditioning_channels != self.vae.config.latent_channels):
                    raise WeightsError(f"{self.folder / f'controlnet_k{k}'}: does not match the prior "
                                       f"(channels {tuple(net.config.block_out_channels)} vs "
                                       f"{tuple(self.prior.config.block_out_channels)}) or the VAE's latents")
                self.controlnets[k] = net
            self.controlnet = self.controlnets[k]
            return self.controlnets[k]

    def run(self, dates, *, generator, progress, sampler, steps, inr: int | None = None, **opts):
        k = DEFAULT_INR if inr is None else inr
        controlnet = self.get_controlnet(k)
        pixel_out, cloud = pixel_cr_forward(self.pixel_cr, dates[0])
        out = idfcr_sample(self.vae, self.prior, controlnet, pixel_out[None], sampler=sampler, steps=steps,
                           generator=generator, progress=progress,
                           fix_color=opts.get("color_fix", self.color_fix),
                           color_fix_sigma=self.color_fix_sigma, null_embedding=self.null_embedding,
                           strength=self.strength)
        return out[0].numpy(), {"cloud": cloud.numpy()}

    @torch.no_grad()
    def step_gmacs(self, dates, inr: int | None = None) -> float:
        """GMACs of ONE prior + ControlNet evaluation at these dates' size (torch's FLOP counter / 2)."""
        from torch.utils.flop_counter import FlopCounterMode

        x = as_dates(dates)
        if inr is not None or self.controlnet is None:
            controlnet = self.get_controlnet(DEFAULT_INR if inr is None else inr)
        else:
            controlnet = self.controlnet  # the one the last call used
        multiple = vae_factor(self.vae) * unet_multiple(self.prior)
        h, w = (-(-s // multiple) * multiple // vae_factor(self.vae) for s in x.shape[-2:])
        p = next(self.prior.parameters())
        z = torch.zeros(1, self.prior.config.in_channels, h, w, device=p.device, dtype=p.dtype)
        cond = torch.zeros(1, controlnet.config.conditioning_channels, h, w, device=p.device, dtype=p.dtype)
        t = torch.tensor([500], device=p.device)
        with FlopCounterMode(display=False) as fc:
            controlled_eps(self.prior, controlnet, z, t, cond, text_context(self.prior, 1, self.null_embedding))
        return fc.get_total_flops() / 2e9


__all__ = ["IDFCR", "BETA_SCHEDULE", "COLOR_FIX_MODES", "color_fix", "controlled_eps", "decode", "encode", "idfcr_sample",
           "make_scheduler"]
