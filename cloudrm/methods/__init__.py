"""The method registry: name -> class. ``load_method`` caches loaded models (thread-safe)."""
from __future__ import annotations

import threading

import torch

from ..errors import ConfigError
from .base import Method, Result, as_dates
from .classic import Identity, Median

METHODS = ("identity", "median", "pixel-cr", "idf-cr", "diffcr")
_cache: dict[tuple, Method] = {}
_lock = threading.Lock()


def method_class(name: str) -> type[Method]:
    if name == "identity":
        return Identity
    if name == "median":
        return Median
    if name == "pixel-cr":
        from .pixelcr import PixelCRMethod
        return PixelCRMethod
    if name == "diffcr":
        from .diffcr import DiffCR
        return DiffCR
    if name == "idf-cr":
        from .idfcr import IDFCR
        return IDFCR
    raise ConfigError(f"unknown method '{name}' (use {', '.join(METHODS)})")


def _weights_stamp(name: str, spec: str | None) -> float:
    """Modification time of the weights' cloudrm.json, so re-exported weights are picked up."""
    from pathlib import Path

    from ..weights import VARIANTS, bundled_dir

    if name not in VARIANTS:
        return 0.0
    variants = VARIANTS[name][2]
    folder = bundled_dir(name, spec or VARIANTS[name][1]) if (spec is None or spec in variants) else Path(spec)
    meta = folder / "cloudrm.json"
    return meta.stat().st_mtime if meta.exists() else 0.0


def load_method(name: str, weights: str | None = None, device: str | torch.device | None = None) -> Method:
    """A ready-to-call method; the same (name, weights, device) returns the same cached object until the
    weights' ``cloudrm.json`` changes. Methods keep no per-call state (fresh scheduler and generator per
    call, models in eval mode under no_grad), so one object serves concurrent callers."""
    cls = method_class(name)
    key = (name, weights, str(device), _weights_stamp(name, weights))
    with _lock:
        if key not in _cache:
            _cache[key] = cls(weights, device) if name not in ("identity", "median") else cls(None, device)
        return _cache[key]


__all__ = ["METHODS", "Method", "Result", "as_dates", "load_method", "method_class"]
