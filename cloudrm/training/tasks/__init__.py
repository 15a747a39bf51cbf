"""Training tasks: what each model trains on and how (one small class per model), by name.

:data:`TASKS` is the registry ``python -m cloudrm train TASK`` reads; :func:`make_task` builds one for a config.
Every task is run by the one loop, :func:`cloudrm.training.loop.train`.
"""
from __future__ import annotations

from ...errors import ConfigError
from ..config import TrainConfig
from .base import Task, average_groups
from .diffcr import DiffCRTask
from .idfcr import AutoencoderTask, ControlNetTask, PriorTask
from .pixelcr import PixelCRTask

#: task name -> class (the CLI's ``train`` names)
TASKS: dict[str, type[Task]] = {"pixel-cr": PixelCRTask, "diffcr": DiffCRTask, "autoencoder": AutoencoderTask,
                                "prior": PriorTask, "controlnet": ControlNetTask}


def make_task(cfg: TrainConfig) -> Task:
    """The task ``cfg.task`` names, built for ``cfg``; an unknown name is a one-line ConfigError."""
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown training task '{cfg.task}' (use {', '.join(sorted(TASKS))})")
    return TASKS[cfg.task](cfg)


__all__ = ["TASKS", "Task", "average_groups", "make_task"]
