"""DiffCR training: x0 prediction, MSE, continuous alpha_bar conditioning (same meaning as in sampling)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pathlib import Path
from typing import Any

from ... import sampling, weights
from ...pipelines.diffcr import diffcr_sample, train_alphas_cumprod
from ...models.diffcr_unet import DiffCRUNet
from .base import Task


class DiffCRTask(Task):
    weights_dir, subfolder, method = "diffcr", "unet", "diffcr"

    def build_model(self):
        self.ac = torch.as_tensor(train_alphas_cumprod())
        return DiffCRUNet(**self.cfg.model)

    def loss(self, model, batch):
        x0 = batch["target"] * 2 - 1
        dates = batch["dates"] * 2 - 1
        b = x0.shape[0]
        ab = sampling.training_noise_level(self.ac, b).to(x0.device)
        noise = torch.randn_like(x0)
        y_t = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * noise
        return F.mse_loss(model(y_t, ab, dates=dates, n_dates=batch["n_dates"]), x0)

    def predict(self, model, dates):
        opts = self.cfg.task_options
        gen = torch.Generator("cpu").manual_seed(0)
        # val_single_date_strength: one date sampled as shipped (the weights' single_date_strength)
        return diffcr_sample(model, dates[None], sampler=opts.get("val_sampler", "dpmpp"),
                             steps=opts.get("val_steps", 5), generator=gen,
                             single_date_strength=opts.get("val_single_date_strength", 1.0))[0]

    def export(self, model, folder: Path, meta: dict[str, Any]) -> None:
        super().export(model, folder, meta)
        strength = self.cfg.task_options.get("val_single_date_strength")
        if strength is not None:  # the weights sample one date as they were validated
            info = weights.read_meta(folder)
            info["single_date_strength"] = strength
            weights.write_meta(folder, info)
