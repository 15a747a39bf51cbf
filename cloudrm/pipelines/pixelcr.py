"""The Pixel-CR pipeline (IDF-CR's stage 1): one forward pass, the output and the cloud-attention map."""
from __future__ import annotations

import torch

from ..models.pixel_cr import PixelCR


@torch.no_grad()
def pixel_cr_forward(model: PixelCR, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C,H,W) in [0,1] -> (output (C,H,W), cloud map (H,W)), any size."""
    device = next(model.parameters()).device
    out, maps = model(image[None].to(device))
    cloud = PixelCR.cloud_map(maps, image.shape[-2:])
    return out[0].clamp(0, 1).float().cpu(), cloud[0, 0].float().cpu()
