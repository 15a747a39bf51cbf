"""The base of every training task (run by :func:`cloudrm.training.loop.train`) and the one helper that
averages validation scores per group."""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ... import metrics, synth, weights
from ...datasets import (Source, TrainMixture, data_root, iter_eval_items, made_dates, s2_is_validation, s2_stack,
                        scene_folders, train_bank, validation_pairs)
from ...errors import ConfigError
from ..config import TrainConfig, val_spec


#: made cloudy versions of each validation clear date in an ``s2made:`` group
MADE_PER_DATE = 3
#: decimals of each validation number (PSNR, NIQE, ...: 3)
_DIGITS = {"ssim": 4, "recon_ssim": 4}


def average_groups(groups: Mapping[str, Sequence[Mapping[str, float | None]]],
                   key: Callable[[str], str] = lambda g: g.replace("/", "_"), main: str = "psnr") -> dict[str, float]:
    """Validation scores per group of images -> ``{key(group)}_{name}`` (the group's mean; None = not measured,
    a name never measured is left out) and ``{key(group)}_n``, plus ``psnr``: the mean over groups of each
    group's mean ``main`` score (each group counts once), the number that picks the checkpoint that ships."""
    res: dict[str, float] = {}
    for g, rows in groups.items():
        k = key(g)
        for name in rows[0]:
            vals = [r[name] for r in rows if r[name] is not None]
            if vals:
                res[f"{k}_{name}"] = round(float(np.mean(vals)), _DIGITS.get(name, 3))
        res[f"{k}_n"] = len(rows)
    if groups:
        res["psnr"] = round(float(np.mean([np.mean([r[main] for r in rows]) for rows in groups.values()])), 3)
    return res


class Task:
    """Base: subclasses set ``weights_dir``/``subfolder`` and implement model, data, loss, validation."""

    weights_dir = ""
    subfolder = ""
    method = ""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        root = cfg.data_root or (str(data_root()) if data_root() else "")
        if not root or not Path(root).is_dir():
            raise ConfigError("no data root: set CLOUDRM_DATA or data_root in the config")
        self.root = Path(root)

    # -- model
    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def load_init(self, model: torch.nn.Module, folder: Path) -> dict[str, Any]:
        """Load shipped weights into ``model``; returns their step count, seconds and best validation."""
        src = type(model).from_pretrained(str(folder / self.subfolder))
        # parts the shipped weights lack may start as the model initialises them if it says they may
        # (zero-initialised additions such as DiffCR's fusion gates, which then reproduce the old network)
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        new = tuple(getattr(model, "init_new_keys", ()))
        if unexpected or any(not k.startswith(new) for k in missing):  # startswith(()) is False
            raise ConfigError(f"{folder}: weights do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
        info = (weights.read_meta(folder).get("components") or {}).get(self.subfolder, {})
        # a best score measured on other validation data is not comparable: the first validation then ships
        same_val = val_spec(info.get("training_data") or {}) == val_spec(self.cfg.data)
        return {"step": int(info.get("trained_steps", 0)), "seconds": 60.0 * float(info.get("train_minutes", 0.0)),
                "best": float((info.get("validation") or {}).get("psnr", -1.0)) if same_val else -1.0}

    # -- data and loss
    def train_dataset(self):
        d = self.cfg.data
        return TrainMixture(self.root, Source(rice=d.get("rice", ()), clear=d.get("clear", ()),
                                              sen2mtc=d.get("sen2mtc"), scenes=d.get("scenes", ()),
                                              s2_clear=d.get("s2_clear", ()), bank=d.get("bank", ())),
                            crop=d.get("crop", 128), p_real=d.get("p_real", 0.5),
                            dates=tuple(d.get("dates", (1, 1))), length=d.get("length", 100_000), seed=self.cfg.seed,
                            cloud_cfg=self.cloud_config(), p_bank=d.get("p_bank", 0.5), p_s2=d.get("p_s2", 0.5),
                            bank=self._stack_bank())

    def cloud_config(self) -> synth.CloudConfig:
        """The synthetic-cloud generator's settings: ``data.clouds`` over the defaults."""
        try:
            return synth.CloudConfig.from_options(self.cfg.data.get("clouds"))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.clouds: {e}") from None

    def loss(self, model, batch) -> torch.Tensor:
        raise NotImplementedError

    def train_step(self, model, batch, optimizer, accelerator, params, grad_clip) -> float:
        """One (accumulated) optimiser step; tasks with several passes per batch override it (INR)."""
        loss = self.loss(model, batch)
        accelerator.backward(loss)
        if grad_clip and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    # -- validation and export
    def val_items(self) -> list[dict]:
        names = self.cfg.data.get("val", [])
        items = []
        for n in names:
            if n.startswith("scenes:"):
                p = self.root / n.split(":", 1)[1]
                if p.is_dir():
                    items += [dict(it, group=n) for it in iter_eval_items(p, "scenes")]
            elif n.startswith(("s2val:", "s2stacks:", "s2made:", "s2clear:")):
                # the validation regions of a SEN12MS-CR scenes folder (absent folder: none), as
                kind, folder = n.split(":", 1)
                for j, it in enumerate(self._s2_validation(folder)):
                    if kind == "s2val":      # they are: one real cloudy date
                        items.append(dict(it, group=n))
                    elif kind == "s2stacks":  # 3-date stacks: the real date + two made with the train regions' layers
                        items.append(dict(it, dates=s2_stack(it, self._stack_bank(), seed=len(items)), group=n))
                    elif kind == "s2clear":   # the clear date as input: a model should give it back unchanged
                        items.append(dict(it, dates=it["target"][None], group=n))
                    else:
                        # the clear date clouded here, MADE_PER_DATE times (real layers of the train regions or
                        # procedural clouds): single dates with an exact reference, three times as many as the real
                        # ones, so a checkpoint is not chosen on 12 images' luck alone; seeds of the group's own,
                        # the same whatever groups precede it
                        for k in range(MADE_PER_DATE):
                            made = made_dates(it, self._stack_bank(), 1, seed=1000 * k + j, p_bank=0.5)
                            items.append(dict(it, dates=made, group=n))
            elif n.startswith("pairs:"):
                # every pair of a cloud/label folder that no training source reads (e.g. Sen2_MTC_New_val128)
                p = self.root / n.split(":", 1)[1]
                if p.is_dir():
                    items += [dict(it, group=n) for it in iter_eval_items(p, "rice")]
            elif n.startswith("synth:"):
                # a RICE validation split's clear labels under fixed procedural thick clouds with saturated
                # (display 1.0) cores: what a model must not paint over in colours of neither input nor ground
                cfg = synth.CloudConfig(p_thick=1.0, p_haze=0.3, coverage=(0.2, 0.5))
                for i, it in enumerate(validation_pairs(self.root, n.split(":", 1)[1])):
                    cloudy, _ = synth.add_clouds(it["target"], np.random.default_rng(1000 + i), cfg)
                    items.append(dict(it, dates=cloudy[None], group=n))
            elif (self.root / n).is_dir():
                items += [dict(it, group=n) for it in validation_pairs(self.root, n)]
        limit = self.cfg.data.get("val_limit")
        return items[:limit] if limit else items

    def _s2_validation(self, folder: str) -> list[dict]:
        """Eval items of the validation regions' pairs in a SEN12MS-CR scenes folder (none if it is absent)."""
        p = self.root / folder
        if not p.is_dir():
            return []
        val = [name for name, _, clear in scene_folders(p) if clear is not None and s2_is_validation(name)]
        return list(iter_eval_items(p, "scenes", names=val))

    def _stack_bank(self):
        """The config's cloud bank, built once: the training data and the validation stacks share it."""
        if not hasattr(self, "_bank"):
            self._bank = train_bank(self.root, self.cfg.data.get("bank", ()))
        return self._bank

    def predict(self, model, dates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model) -> dict[str, float]:
        if not hasattr(self, "_val"):
            self._val = self.val_items()
        groups: dict[str, list[dict[str, float]]] = {}
        t0 = time.time()
        for it in self._val:
            out = self.predict(model, torch.from_numpy(it["dates"])).numpy()
            groups.setdefault(it["group"], []).append({"psnr": metrics.psnr(it["target"], out),
                                                       "ssim": metrics.ssim(it["target"], out)})
        res = average_groups(groups, key=lambda g: g.replace("scenes:", "").replace("/", "_"))
        res["val_seconds"] = round(time.time() - t0, 1)
        return res

    def export(self, model, folder: Path, meta: dict[str, Any]) -> None:
        # fp16 storage keeps every shipped file under 10 MB; loading casts back to fp32
        copy.deepcopy(model).half().save_pretrained(str(folder / self.subfolder))
        info = weights.read_meta(folder) or {}
        info.update({"method": self.method, "variant": self.cfg.variant, "bands": ["B04", "B03", "B02"]})
        comp = info.setdefault("components", {})
        comp[self.subfolder] = {
            "trained_steps": meta["trained_steps"], "train_minutes": meta["train_minutes"],
            "batch_size": meta["batch_size"], "validation": meta["validation"],
            "training_data": self.cfg.data, "model": self.cfg.model, "lr": self.cfg.lr,
            "hardware": "CPU (2 cores)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
            "mixed_precision": self.cfg.mixed_precision,
            "produced_by": f"python -m cloudrm train {self.cfg.task} --config ... (cloudrm)",
        }
        if "initialised_from" in meta:
            comp[self.subfolder]["initialised_from"] = meta["initialised_from"]
        weights.write_meta(folder, info)
