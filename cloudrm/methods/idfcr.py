"""IDF-CR as a method: load Pixel-CR, the VAE, the frozen prior and the ControlNets from a weights folder, then
run :func:`cloudrm.pipelines.idfcr.idfcr_sample` (where the pipeline and its design choices are described).

Weights folder (``cloudrm/bundled_weights/idfcr/<variant>/``): ``pixel_cr/ vae/ prior/ controlnet_k1/ controlnet_k2/
controlnet_k3/`` and one ``cloudrm.json`` (method ``idf-cr``; per-part metadata under ``components``).
``controlnet_k{K}`` is the ControlNet trained with K INR passes per batch; ``inr`` (1, 2, 3; default 3)
picks it. Paper-scale path: a component entry ``{"hub": "owner/name[@rev]", "subfolder": "vae"}`` in
``cloudrm.json`` (and no local ``vae/``/``prior/`` folder) loads a hub Stable Diffusion VAE / U-Net with
``from_pretrained``; offline it fails with one line. A cross-attention U-Net gets a zero text embedding
(the unconditional branch) unless the component names a ``null_embedding`` file (.safetensors, key ``emb``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from .. import weights
from ..errors import ConfigError, WeightsError, one_line
from ..models.pixel_cr import PixelCR
from ..pipelines.idfcr import (BETA_SCHEDULE, COLOR_FIX_MODES, DEFAULT_COLOR_FIX_SIGMA, DEFAULT_INR, INR_CHOICES,
                               color_fix, color_fix_mode, controlled_eps, decode, encode, gaussian_lowpass,
                               idfcr_sample, latent_stats, make_scheduler, text_context, unet_multiple,
                               vae_factor)
from ..pipelines.pixelcr import pixel_cr_forward
from ..weights import load_component
from .base import Method, as_dates


# ----------------------------------------------------------------------------------------------- loading
def load_null_embedding(folder: Path, meta: dict[str, Any]) -> torch.Tensor | None:
    """The unconditional text embedding a hub Stable Diffusion prior needs (``components.prior.null_embedding``)."""
    rel = ((meta.get("components") or {}).get("prior") or {}).get("null_embedding")
    if not rel:
        return None
    path = folder / rel
    try:
        return load_file(str(path))["emb"].float()
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load the unconditional text embedding ({one_line(exc)[:160]})") from None


class IDFCR(Method):
    """Pixel-CR, then the latent ControlNet-steered prior; ``inr`` picks ``controlnet_k{K}``."""

    name = "idf-cr"
    max_dates = 1
    stochastic = True
    default_sampler = "ddpm"
    default_steps = 50

    def __init__(self, weights_spec: str | None = None, device=None):
        super().__init__(weights_spec, device)
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
        self.strength = weights.meta_strength(self.folder, self.meta, "strength")
        self.controlnets: dict[int, torch.nn.Module] = {}
        self.controlnet: torch.nn.Module | None = None  # the last one used (counted by ``bench``)

    def get_controlnet(self, k: int):
        """The ControlNet trained with K INR passes (loaded on first use; a missing one names its folder)."""
        if k not in INR_CHOICES:
            raise ConfigError(f"INR K must be 1, 2 or 3, got {k}")
        with self._lock:
            if k not in self.controlnets:
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


# the pipeline's names stay importable from here (notebooks and older code use ``methods.idfcr as M``)
__all__ = ["IDFCR", "BETA_SCHEDULE", "COLOR_FIX_MODES", "DEFAULT_COLOR_FIX_SIGMA", "DEFAULT_INR", "INR_CHOICES",
           "color_fix", "color_fix_mode", "controlled_eps", "decode", "encode", "gaussian_lowpass", "idfcr_sample",
           "latent_stats", "load_component", "load_null_embedding", "make_scheduler",
           "text_context", "unet_multiple", "vae_factor"]
