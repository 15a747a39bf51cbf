"""cloudrm: remove clouds from optical satellite images with DiffCR and IDF-CR.

Public API (the CLI, the app and the notebooks use only this)::

    import cloudrm
    method = cloudrm.load_method("diffcr")                  # or "pixel-cr", "idf-cr", "median", "identity"
    result = method([date1, date2, date3], steps=20, seed=0) # (C,H,W) float arrays in [0, 1]
    result.image, result.maps["uncertainty"], result.seconds

Nothing here touches the network or loads a model at import time.
"""
from __future__ import annotations

from .errors import CloudRMError, ConfigError, InputError, WeightsError

__version__ = "0.1.0"


def load_method(name: str, weights: str | None = None, device=None):
    """Load (and cache) a method by name; see :mod:`cloudrm.methods`."""
    from .methods import load_method as _load

    return _load(name, weights, device)


def __getattr__(name: str):
    if name in ("Result", "METHODS"):
        from . import methods

        return getattr(methods, name)
    if name == "remove_clouds":
        from .api import remove_clouds

        return remove_clouds
    raise AttributeError(name)


__all__ = ["CloudRMError", "ConfigError", "InputError", "WeightsError", "load_method", "remove_clouds",
           "Result", "METHODS", "__version__"]
