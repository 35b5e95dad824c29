"""The connection layer: the RESP protocol, a link that stays up, Cluster and Sentinel."""

from __future__ import annotations

import importlib
import pkgutil

import herald._core


def compiled() -> tuple[str, ...]:
    """The modules of ``herald._core`` and ``herald._io`` that run compiled (C extensions
    built by mypyc when Herald is installed with ``HERALD_MYPYC=1``: the core and ``Link``);
    empty for pure Python. ``herald --version`` says."""
    names = [f"herald._core.{info.name}" for info in pkgutil.iter_modules(herald._core.__path__)]
    names += [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)]
    return tuple(
        name
        for name in names
        if not (getattr(importlib.import_module(name), "__file__", None) or "").endswith(".py")
    )
