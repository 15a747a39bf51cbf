"""DiffCR as a method: the U-Net from a weights folder, sampled by :func:`cloudrm.pipelines.diffcr.diffcr_sample`."""
from __future__ import annotations

import torch

from .. import weights
from ..models.diffcr_unet import DiffCRUNet
from ..pipelines.diffcr import TRAIN_STEPS, diffcr_sample, train_alphas_cumprod
from .base import Method

class DiffCR(Method):
    name = "diffcr"
    stochastic = True
    default_sampler = "dpmpp"
    default_steps = 20

    def __init__(self, weights_spec: str | None = None, device=None):
        super().__init__(weights_spec, device)
        folder, self.weights_id = weights.resolve("diffcr", weights_spec)
        self.meta = weights.check_method(folder, "diffcr")
        self.unet = weights.load_model(DiffCRUNet, folder, "unet").to(self.device, memory_format=torch.channels_last)
        self.bands = tuple(self.meta.get("bands", ("B04", "B03", "B02")))
        self.single_date_strength = weights.meta_strength(folder, self.meta, "single_date_strength")

    def run(self, dates, *, generator, progress, sampler, steps, **opts):
        x = dates[None].to(self.device)
        if self.unet.config.in_channels == 3:
            x = x[:, :, :3]
        out = diffcr_sample(self.unet, x, sampler=sampler, steps=steps, generator=generator, progress=progress,
                            single_date_strength=self.single_date_strength)
        return out[0].numpy(), {}


__all__ = ["DiffCR", "TRAIN_STEPS", "diffcr_sample", "train_alphas_cumprod"]  # pipeline names re-exported
