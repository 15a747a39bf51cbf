"""What every method is: a callable on a list of dates that returns a :class:`Result`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from ..dates import MAX_DATES, check_count, cover_note, white_fraction
from ..errors import ConfigError, InputError
from ..io import MIN_SIDE
from ..sampling import MAX_STEPS, check_sampler

ProgressFn = Callable[[int, int], None]
#: Seeds are 0..SEED_MAX: torch's generator takes 64 bits, but numpy-style seeding and most tools repeat every
#: 2**32, so larger values would only alias smaller ones. Others are refused with one line.
SEED_MAX = 2**32 - 1


def check_seed(seed: Any) -> int:
    """``seed`` as an int in 0..SEED_MAX, else a one-line ConfigError."""
    ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if not ok or not 0 <= int(seed) <= SEED_MAX:
        raise ConfigError(f"seed must be an integer in 0..{SEED_MAX}")
    return int(seed)


@dataclass(frozen=True)
class Result:
    """image (C,H,W) float32 in [0,1]; maps such as ``cloud`` (H,W) and ``uncertainty`` (H,W)."""

    image: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def as_dates(dates: Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate and stack 1-3 dates of one place into a float32 (N,C,H,W) tensor in [0,1]."""
    if isinstance(dates, (np.ndarray, torch.Tensor)) and np.ndim(dates) == 3:
        dates = [dates]
    items = [torch.as_tensor(np.asarray(d, dtype=np.float32)) if not isinstance(d, torch.Tensor) else d.float()
             for d in dates]
    check_count(len(items))
    for i, d in enumerate(items):
        if d.ndim != 3:
            raise InputError(f"date {i + 1}: expected a (C,H,W) image, got shape {tuple(d.shape)}")
        if min(d.shape[-2:]) < MIN_SIDE:
            raise InputError(f"date {i + 1}: {d.shape[-1]}x{d.shape[-2]} px; each side must be at least {MIN_SIDE} px")
        if not torch.isfinite(d).all():
            raise InputError(f"date {i + 1}: contains NaN or inf values")
    shapes = {tuple(d.shape) for d in items}
    if len(shapes) > 1:
        desc = ", ".join(f"{d.shape[-1]}x{d.shape[-2]}x{d.shape[0]}" for d in items)
        raise InputError(f"dates differ in size or bands ({desc}); all dates must show the same place at the same size")
    return torch.stack(items).clamp(0, 1)


class Method:
    """Base class: subclasses implement :meth:`run`; ``__call__`` validates, times and records settings."""

    name: ClassVar[str] = ""
    max_dates: ClassVar[int] = MAX_DATES
    bands: tuple[str, ...] = ("B04", "B03", "B02")
    stochastic: ClassVar[bool] = False
    default_sampler: ClassVar[str | None] = None
    default_steps: ClassVar[int | None] = None

    def __init__(self, weights: str | None = None, device: str | torch.device | None = None):
        self.device = torch.device(device) if device else torch.device("cpu")
        self.weights_id = None
        self.meta: dict[str, Any] = {}
        self._lock = threading.Lock()  # guards lazily loaded parts (e.g. IDF-CR's ControlNets)

    def settings(self, sampler: str | None, steps: int | None, inr: int | None) -> dict[str, Any]:
        """Check the options (the same rules for every method) and fill in the method's defaults."""
        if sampler is not None:
            check_sampler(sampler, steps if steps is not None else 1)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
            raise ConfigError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps}")
        if inr is not None and inr not in (1, 2, 3):
            raise ConfigError(f"INR K must be 1, 2 or 3, got {inr}")
        return {"sampler": sampler or self.default_sampler, "steps": steps or self.default_steps}

    def __call__(self, dates, *, sampler: str | None = None, steps: int | None = None, inr: int | None = None,
                 seed: int = 0, samples: int = 1, progress: ProgressFn | None = None) -> Result:
        x = as_dates(dates)
        opts = self.settings(sampler, steps, inr)
        if inr is not None:
            opts["inr"] = inr
        if not isinstance(samples, int) or not 1 <= samples <= 16:
            raise ConfigError(f"samples must be an integer in 1..16, got {samples}")
        seed = check_seed(seed)
        notes = []
        if x.shape[0] > self.max_dates:
            notes.append(f"{self.name} uses one image: took the first of {x.shape[0]} dates")
            x = x[: self.max_dates]
        c = x.shape[1]
        if c not in (1, 3, 4):
            raise InputError(f"{c} channels: give RGB (3) or RGB+NIR (4) images")
        if c == 1:
            x = x.repeat(1, 3, 1, 1)
        white = white_fraction(x.numpy())
        if note := cover_note(white):
            notes.append(note)
        t0 = time.perf_counter()
        runs = samples if self.stochastic else 1
        outs, maps = [], {}
        for k in range(runs):
            gen = torch.Generator("cpu").manual_seed(int(seed) + k)
            sub = None
            if progress is not None:
                sub = (lambda i, n, k=k: progress(k * n + i, runs * n))
            img, m = self.run(x[:, :3] if self.bands == ("B04", "B03", "B02") else x, generator=gen, progress=sub, **opts)
            outs.append(img)
            if k == 0:
                maps.update(m)
        image = outs[0]
        if len(outs) > 1:
            maps["uncertainty"] = np.stack(outs).std(0).mean(0).astype(np.float32)
        info = {"method": self.name, "seed": seed, "weights": self.weights_id, "dates": int(x.shape[0]),
                "notes": notes, "white_fraction": round(white, 4), **{k: v for k, v in opts.items() if v is not None}}
        if self.stochastic and samples > 1:
            info["samples"] = samples
        return Result(np.clip(image, 0, 1).astype(np.float32), maps, time.perf_counter() - t0, info)

    def run(self, dates: torch.Tensor, *, generator: torch.Generator, progress: ProgressFn | None,
            **opts) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError
