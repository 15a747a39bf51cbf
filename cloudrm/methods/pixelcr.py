"""Pixel-CR alone (IDF-CR's stage 1): one forward pass; returns the cloud-attention map too."""
from __future__ import annotations

import torch

from .. import weights
from ..models.pixel_cr import PixelCR
from ..pipelines.pixelcr import pixel_cr_forward
from .base import Method


def load_pixel_cr(spec: str | None, device: torch.device) -> tuple[PixelCR, dict, str]:
    folder, wid = weights.resolve("pixel-cr", spec)
    meta = weights.check_method(folder, "pixel-cr")
    return weights.load_model(PixelCR, folder, "pixel_cr").to(device), meta, wid


class PixelCRMethod(Method):
    name = "pixel-cr"
    max_dates = 1

    def __init__(self, weights_spec: str | None = None, device=None):
        super().__init__(weights_spec, device)
        self.model, self.meta, self.weights_id = load_pixel_cr(weights_spec, self.device)

    def run(self, dates, *, generator, progress, **opts):
        out, cloud = pixel_cr_forward(self.model, dates[0])
        if progress:
            progress(1, 1)
        return out.numpy(), {"cloud": cloud.numpy()}
