"""The sans-I/O core: wire format, RESP, topics, URLs, offsets, slots, messages, and the
keys, scripts and bookkeeping of durable and recoverable topics. Imports nothing above it."""

from __future__ import annotations

import importlib
import pkgutil


def compiled() -> tuple[str, ...]:
    """The modules of this package that run compiled (C extensions built by mypyc when Herald
    is installed with ``HERALD_MYPYC=1``); empty for pure Python. ``herald --version`` says."""
    names = (f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__))
    return tuple(
        name
        for name in names
        if not (getattr(importlib.import_module(name), "__file__", None) or "").endswith(".py")
    )
