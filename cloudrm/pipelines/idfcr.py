"""The IDF-CR pipeline: Pixel-CR (stage 1) then iterative noise diffusion in a latent space (stage 2).

The latent math, the ControlNet residuals, the colour fix and the sampling call; loading the parts from a
weights folder is :mod:`cloudrm.methods.idfcr`, the hub is :mod:`cloudrm.weights`.

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
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import sampling
from ..errors import ConfigError
from ..models.blocks import pad_to_multiple
from ..sampling import ProgressFn

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


__all__ = ["BETA_SCHEDULE", "COLOR_FIX_MODES", "DEFAULT_COLOR_FIX_SIGMA", "DEFAULT_INR", "INR_CHOICES", "color_fix",
           "color_fix_mode", "controlled_eps", "decode", "encode", "gaussian_lowpass", "idfcr_sample", "latent_stats",
           "make_scheduler", "text_context", "unet_multiple", "vae_factor"]
