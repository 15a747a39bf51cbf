"""Errors a user can cause. The CLI maps them to exit code 2, the app to ``gr.Error``.

Each message is one line that says what is wrong and, where possible, how to fix it.
"""
from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


class CloudRMError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(CloudRMError, ValueError):
    """An input image, its bands or its dates cannot be used."""


class WeightsError(CloudRMError, OSError):
    """A weights spec cannot be resolved or a weights file is missing, corrupt or for another method."""


class ConfigError(CloudRMError, ValueError):
    """A bad option: unknown method or sampler, steps or K out of range, bad output path."""
