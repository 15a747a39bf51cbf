"""Weight averaging ("model soups", Wortsman et al. 2022): one part of a weights folder as the weighted mean of the
same part in several trained folders.

Runs fine-tuned from one ancestor (here: Pixel-CR ``sen2`` runs that all start from the ``rice2`` weights) stay in
one basin of the loss, so their mean is a working model that often keeps what each run learnt and forgets what
one run alone over-fitted. Only the averaged part changes; the other parts and the folder's settings come from
the first folder, and ``cloudrm.json`` records every source (its own provenance, steps and data) and its share.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from .. import weights
from ..errors import ConfigError, one_line

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes
# config.json keys diffusers writes about where and by which version a model was saved, not what it is
BOOKKEEPING = {"_diffusers_version", "_name_or_path"}


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """What a part's config.json says about its architecture: all of it but diffusers' bookkeeping."""
    return {k: v for k, v in config.items() if k not in BOOKKEEPING}


def _read_part(folder: Path, part: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = folder / part
    if not (path / "config.json").exists() or not (path / WEIGHTS_FILE).exists():
        raise ConfigError(f"{path}: no {part} weights here (config.json and {WEIGHTS_FILE} needed)")
    try:
        return json.loads((path / "config.json").read_text()), load_file(str(path / WEIGHTS_FILE))
    except Exception as exc:  # a damaged file: one line naming it
        raise ConfigError(f"{path}: cannot read its weights ({one_line(exc)[:200]})") from None


def average_folders(folders: Sequence[Path], shares: Sequence[float] | None, part: str, out: Path,
                    command: str = "python -m cloudrm average ...") -> dict[str, Any]:
    """Write ``out`` (a weights folder) whose ``part`` is ``sum(share_i * part_i)`` over ``folders``.

    ``shares`` default to equal and are normalised to sum to 1. Every folder's part must have the same
    architecture (config and tensor shapes), else a one-line ConfigError. ``out`` may be one of the sources
    (all are read before anything is written). Returns the averaged part's metadata."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise ConfigError("average needs at least two weights folders")
    shares = [1.0] * len(folders) if shares is None else [float(s) for s in shares]
    if len(shares) != len(folders):
        raise ConfigError(f"{len(shares)} shares for {len(folders)} folders: give one share per folder")
    if any(not s > 0 for s in shares):  # also rejects NaN
        raise ConfigError(f"shares must be positive numbers, got {shares}")
    shares = [s / sum(shares) for s in shares]

    parts = [_read_part(f, part) for f in folders]
    config0, state0 = parts[0]
    for f, (config, state) in zip(folders[1:], parts[1:]):
        if _architecture(config) != _architecture(config0):
            raise ConfigError(f"{f / part}: another architecture than {folders[0] / part} (config.json differs)")
        if state.keys() != state0.keys() or any(state[k].shape != state0[k].shape for k in state0):
            raise ConfigError(f"{f / part}: its tensors do not match {folders[0] / part}")
    mean = {}
    for k, t0 in state0.items():
        if t0.is_floating_point():
            acc = sum(s * p[1][k].double() for s, p in zip(shares, parts))
            mean[k] = acc.to(t0.dtype)  # stored as the first folder stores it (fp16 for the bundled weights)
        else:
            mean[k] = t0
    metas = [weights.read_meta(f) for f in folders]

    info = {k: v for k, v in metas[0].items() if k != "eval"}  # the sources' scores do not hold for the mean
    comps = dict(info.get("components") or {})
    for name, comp in comps.items():  # parts shared by reference stay the same files seen from ``out``
        if name != part and isinstance(comp, dict) and comp.get("folder"):
            target = (folders[0] / comp["folder"]).resolve()
            comps[name] = {**comp, "folder": os.path.relpath(target, out.resolve())}
    sources = []
    for f, s, meta in zip(folders, shares, metas):
        src = dict((meta.get("components") or {}).get(part) or {})
        sources.append({"folder": str(f), "share": round(s, 6), **src})
    comps[part] = {
        "averaged_from": sources,
        "model": sources[0].get("model"),
        # what a later fine-tune starting here counts from: the longest source (each source's own steps and time
        # are above; sources may share most of their history, e.g. two checkpoints of one run)
        "trained_steps": max(int(s.get("trained_steps", 0)) for s in sources),
        "train_minutes": max(float(s.get("train_minutes", 0.0)) for s in sources),
        "produced_by": command,
    }
    for key in ("hardware", "batch_size", "mixed_precision"):  # settings every source shares hold for the mean
        seen = {json.dumps(s.get(key)) for s in sources}
        if len(seen) == 1 and sources[0].get(key) is not None:
            comps[part][key] = sources[0][key]
    info["components"] = comps

    # write beside ``out`` first, then swap in: a failure leaves ``out`` as it was
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != folders[0].resolve():  # the first folder's other stored parts come along
        for sub in folders[0].iterdir():
            if sub.name != part and (sub / "config.json").exists():
                shutil.copytree(sub, out / sub.name, dirs_exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=out))
    try:
        (tmp / "config.json").write_text(json.dumps(config0, indent=2) + "\n")
        save_file(mean, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        for f in tmp.iterdir():  # mkdtemp is private (0700); a weights folder is readable like save_pretrained's
            f.chmod(0o644)
        tmp.chmod(0o755)
        shutil.rmtree(out / part, ignore_errors=True)
        tmp.rename(out / part)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    weights.write_meta(out, info)
    return comps[part]
