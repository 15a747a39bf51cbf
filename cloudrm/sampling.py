"""The one sampler layer: noise schedules, diffusers schedulers, and the only denoising loop in the project.

Both pipelines use it. It knows neither method: a method passes ``model_fn(x_t, t) -> output`` (a closure over
its own condition) and the scheduler's ``prediction_type`` says whether the output is x0 ("sample", DiffCR)
or the noise ("epsilon", IDF-CR's latent prior).

Noise-level conditioning (DiffCR): the network is trained on the continuous ``alpha_bar`` in (0, 1), so every
sampler must feed it ``alpha_bar`` at the scheduler's integer timestep — :func:`noise_level` is the single
conversion. (The official DiffCR code feeds the raw step index in [0, 999] at inference, a value the network
never saw in training.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .errors import ConfigError

ProgressFn = Callable[[int, int], None]
SAMPLERS = ("dpmpp", "ddim", "ddpm")
MAX_STEPS = 50


# ----------------------------------------------------------------------------------------------- schedules
def sigmoid_alphas_cumprod(T: int = 2000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                           clip_beta: float = 0.999) -> np.ndarray:
    """DiffCR's sigmoid schedule: alpha_bar(t) = (sig(end/tau) - sig((t(end-start)+start)/tau)) / (sig(end/tau) - sig(start/tau)),
    evaluated at t = i/T, i = 0..T (alpha_bar(0) = 1), turned into betas clipped at ``clip_beta``, and returned
    as the T cumulative products for timesteps 0..T-1 (timestep i means alpha_bar((i+1)/T))."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    t = np.linspace(0, 1, T + 1, dtype=np.float64)
    v_start, v_end = sig(start / tau), sig(end / tau)
    ab = (v_end - sig((t * (end - start) + start) / tau)) / (v_end - v_start)
    ab = ab / ab[0]
    betas = np.clip(1 - ab[1:] / ab[:-1], 0, clip_beta)
    return np.cumprod(1 - betas)


def betas_from_alphas_cumprod(ac: np.ndarray) -> np.ndarray:
    prev = np.concatenate([[1.0], ac[:-1]])
    return 1 - ac / prev


def noise_level(alphas_cumprod: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """What the DiffCR network is conditioned on at scheduler timestep ``t``: alpha_bar_t in (0, 1)."""
    t = torch.as_tensor(t, device=alphas_cumprod.device).long().clamp(0, len(alphas_cumprod) - 1)
    return alphas_cumprod[t].float()


def training_noise_level(alphas_cumprod: torch.Tensor, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Continuous training noise level: t ~ U{0..T-1}, alpha_bar ~ U(alpha_bar_t, alpha_bar_{t-1})
    (alpha_bar_{-1} = 1). Sampling feeds alpha_bar_t, the lower end of the same interval."""
    T = len(alphas_cumprod)
    t = torch.randint(0, T, (batch,), generator=generator)
    hi = torch.where(t > 0, alphas_cumprod[(t - 1).clamp(min=0)], torch.ones(batch, dtype=alphas_cumprod.dtype))
    lo = alphas_cumprod[t]
    u = torch.rand(batch, generator=generator, dtype=alphas_cumprod.dtype)
    return (lo + u * (hi - lo)).float()


# ----------------------------------------------------------------------------------------------- schedulers
def check_sampler(sampler: str, steps: int) -> None:
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{sampler}' (use {', '.join(SAMPLERS)})")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"steps must be an integer in 1..{MAX_STEPS}, got {steps}")


def make_scheduler(sampler: str, *, prediction_type: str, trained_betas: np.ndarray | None = None,
                   beta_schedule: str = "scaled_linear", beta_start: float = 0.00085, beta_end: float = 0.012,
                   num_train_timesteps: int = 1000, clip_sample: bool = False):
    """A fresh diffusers scheduler (DPM-Solver++ keeps state: never share one between calls)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{sampler}' (use {', '.join(SAMPLERS)})")
    common = dict(num_train_timesteps=num_train_timesteps if trained_betas is None else len(trained_betas),
                  prediction_type=prediction_type, beta_schedule=beta_schedule, beta_start=beta_start,
                  beta_end=beta_end, trained_betas=None if trained_betas is None else np.asarray(trained_betas, np.float64).tolist())
    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="linspace", lower_order_final=True,
                                           final_sigmas_type="zero")
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=clip_sample, set_alpha_to_one=True, timestep_spacing="linspace")
    return DDPMScheduler(**common, clip_sample=clip_sample, variance_type="fixed_small", timestep_spacing="linspace")


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Seeded noise drawn on the CPU generator (same numbers on every device), then moved."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


@torch.no_grad()
def sample(model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scheduler, noise: torch.Tensor, *,
           steps: int, generator: torch.Generator, progress: ProgressFn | None = None,
           init: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
    """Run the reverse process from ``noise`` for ``steps`` steps; returns x_0 (or z_0).

    ``init`` with ``strength`` < 1 (SDEdit / diffusers' img2img): ``init`` is noised to the schedule's timestep at
    ``strength`` and only the last ``round(steps * strength)`` (at least 1) of the ``steps`` are run.
    """
    scheduler.set_timesteps(steps, device=noise.device)
    timesteps = scheduler.timesteps
    if init is not None and strength < 1.0:
        if not 0.0 < strength:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        timesteps = timesteps[len(timesteps) - max(1, round(len(timesteps) * strength)):]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
        x = scheduler.add_noise(init, noise, timesteps[:1])
    else:
        x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(timesteps):
        out = model_fn(scheduler.scale_model_input(x, t), t)
        # DDPM draws its variance noise from the generator: keep it on the CPU generator's device
        kw = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
        x = scheduler.step(out, t, x, **kw).prev_sample
        if progress is not None:
            progress(i + 1, len(timesteps))
    return x
