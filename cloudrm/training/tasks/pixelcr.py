"""Pixel-CR training (IDF-CR's stage 1): L1 on the output plus the cloud-attention maps against the cloud mask."""
from __future__ import annotations

import torch.nn.functional as F

from ...models.pixel_cr import PixelCR
from .base import Task


class PixelCRTask(Task):
    weights_dir, subfolder, method = "idfcr", "pixel_cr", "idf-cr"

    def build_model(self):
        return PixelCR(**self.cfg.model)

    def loss(self, model, batch):
        x = batch["dates"][:, 0]
        out, maps = model(x)
        l1 = F.l1_loss(out, batch["target"])
        m = batch["mask"][:, None]
        att = sum(F.mse_loss(a, F.adaptive_avg_pool2d(m, a.shape[-2:])) for a in maps) / len(maps)
        return l1 + self.cfg.task_options.get("attention_weight", 0.05) * att

    def predict(self, model, dates):
        out, _ = model(dates[:1].to(next(model.parameters()).device))
        return out[0].clamp(0, 1).cpu()
