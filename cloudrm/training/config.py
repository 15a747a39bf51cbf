"""The training configuration: one JSON file per run (``cloudrm/training/configs/``), overridable from the CLI.

Paths in a config are relative to the folder the command runs in (the repository root for the shipped configs).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def val_spec(data: dict[str, Any]) -> dict[str, Any]:
    """What a validation score was measured on (a config's ``data``): scores on different specs are not compared."""
    return {"val": data.get("val"), "val_limit": data.get("val_limit")}


@dataclass
class TrainConfig:
    task: str = "pixel-cr"
    variant: str = "rice2"
    data_root: str = ""                       # default: $CLOUDRM_DATA
    run_dir: str = "~/.cache/cloudrm/runs/{task}-{variant}"
    export_dir: str = "cloudrm/bundled_weights/{task_dir}/{variant}"
    init_from: str | None = None              # weights folder to start from when no checkpoint exists
    export_last: bool = False                 # export at every validation, not only when it improved
    val_floor: dict[str, float] = field(default_factory=dict)  # e.g. {"RICE2_psnr": 34.5}: a validation below
                                              # any floor never ships, however high its mean
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 4e-4
    lr_mult: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr factor (e.g. new,
                                              # zero-initialised parts learning faster in a fine-tune)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_steps: int = 20_000                   # the cosine schedule's length
    max_minutes: float | None = None          # stop this run (not the schedule) after this long
    stop_at_step: int | None = None           # stop this run at this step (e.g. smoke runs, equal budgets)
    ema_decay: float | None = 0.999
    mixed_precision: str = "no"               # "bf16" on CPU, "fp16"/"bf16" on GPU
    cpu: bool = False
    num_workers: int = 0
    threads: int | None = None                # torch threads per process (1 is best on a shared 2-core box)
    seed: int = 0
    log_every: int = 25
    val_every: int = 500
    checkpoint_every: int = 250
    keep_checkpoints: int = 1
    grad_clip: float | None = 1.0

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> "TrainConfig":
        cfg = json.loads(Path(path).read_text())
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**cfg)

    def path(self, template: str, task_dir: str) -> Path:
        """A run/export folder template with ``{task} {variant} {task_dir} {inr}`` filled in and ``~`` expanded."""
        return Path(os.path.expanduser(template.format(task=self.task, variant=self.variant, task_dir=task_dir,
                                                       inr=self.task_options.get("inr", ""))))
