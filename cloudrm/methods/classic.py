"""Baselines that need no weights: ``identity`` (the first date) and ``median`` (per-pixel median of dates)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Method


class Identity(Method):
    """Returns the first cloudy date unchanged: the floor every method must beat."""

    name = "identity"

    def run(self, dates, *, generator, progress, **opts):
        if progress:
            progress(1, 1)
        return dates[0].numpy(), {}


class Median(Method):
    """Per-pixel median over the dates (with 2 dates: their mean). With one date it is the identity."""

    name = "median"

    def run(self, dates, *, generator, progress, **opts):
        out = dates.mean(0) if dates.shape[0] == 2 else torch.median(dates, dim=0).values
        if progress:
            progress(1, 1)
        return out.numpy().astype(np.float32), {}
