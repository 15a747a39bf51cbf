"""The method registry: name -> class (:data:`REGISTRY`). ``load_method`` caches loaded models (thread-safe)."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import ConfigError
from ..weights import VARIANTS, bundled_dir
from .base import Method, Result, as_dates
from .classic import Identity, Median
from .diffcr import DiffCR
from .idfcr import IDFCR
from .pixelcr import PixelCRMethod

#: method name -> class, in the order the CLI, the app and the README list them
REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (Identity, Median, PixelCRMethod, IDFCR, DiffCR)}
METHODS = tuple(REGISTRY)
#: Loaded deep models kept in memory (env CLOUDRM_MAX_MODELS): every bundled variant of every method fits.
MAX_CACHED = max(1, int(os.environ.get("CLOUDRM_MAX_MODELS", "6")))
_CLASSIC = tuple(n for n in REGISTRY if n not in VARIANTS)  # no weights: tiny, never evicted
_cache: OrderedDict[tuple, Method] = OrderedDict()
_lock = threading.Lock()


def method_class(name: str) -> type[Method]:
    """The class registered under ``name``; an unknown name is a one-line ConfigError."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method '{name}' (use {', '.join(METHODS)})") from None


def _weights_key(name: str, spec: str | None) -> tuple[str, float]:
    """(resolved weights folder, modification time of its cloudrm.json): every spelling of one folder
    (extra slashes, ``..``, ``~``, a symlink) shares one cache entry, and re-exported weights are picked up.
    Hub ids and specs that do not name a folder are keyed as given (the method resolves or refuses them)."""
    if name not in VARIANTS:
        return "", 0.0
    family = VARIANTS[name]
    if spec is None or spec in family.names:
        folder = bundled_dir(name, spec or family.default)
    else:
        folder = Path(os.path.expanduser(spec))
        if not folder.is_dir():
            return spec, 0.0
    folder = folder.resolve()
    meta = folder / "cloudrm.json"
    return str(folder), (meta.stat().st_mtime if meta.exists() else 0.0)


def load_method(name: str, weights: str | None = None, device: str | torch.device | None = None) -> Method:
    """A ready-to-call method; the same (name, resolved weights folder, device) returns the same cached object
    until the weights' ``cloudrm.json`` changes. At most :data:`MAX_CACHED` models stay loaded (least recently
    used go first), so a server fed many weights strings cannot grow without bound. Methods keep no per-call
    state (fresh scheduler and generator per call, models in eval mode under no_grad), so one object serves
    concurrent callers."""
    cls = method_class(name)
    key = (name, *_weights_key(name, weights), str(device))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        m = cls(weights, device) if name not in _CLASSIC else cls(None, device)
        _cache[key] = m
        deep = [k for k in _cache if k[0] not in _CLASSIC]
        for k in deep[: max(0, len(deep) - MAX_CACHED)]:  # least recently used first
            del _cache[k]
        return m


__all__ = ["METHODS", "REGISTRY", "Method", "Result", "as_dates", "load_method", "method_class"]
