"""The build hook for Herald's optional compiled core (pyproject.toml holds everything else).

``HERALD_MYPYC=1 pip install .`` (or ``HERALD_MYPYC=1 python -m build --wheel``) compiles the
sans-I/O core, ``herald._core``, and the connection's write path, ``herald._io.link``, to C
extensions with mypyc (it ships inside mypy): the same
code, type-checked strictly, run natively. Without ``HERALD_MYPYC=1`` nothing is compiled and
the package is pure Python: ``pip install -e .`` needs no compiler. ``herald --version`` says
which one is installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# Every module of herald._core but durable_message.py: its messages are built field by field
# through object.__new__ (the consumer's fast path), which a compiled class does not allow; as an
# interpreted subclass of the compiled Message it keeps that path. __init__.py stays Python.
NOT_COMPILED = {"__init__.py", "durable_message.py"}
CORE = Path("src", "herald", "_core")
# And of herald._io, Link: every publish and command is queued, batched and written there.
LINK = Path("src", "herald", "_io", "link.py")


def compiled_modules() -> list[str]:
    core = sorted(str(p) for p in CORE.glob("*.py") if p.name not in NOT_COMPILED)
    return [*core, str(LINK)]


def ext_modules() -> list[object]:
    if os.environ.get("HERALD_MYPYC") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit(
            "HERALD_MYPYC=1 asks for Herald's compiled core, which needs mypyc: it comes with "
            "mypy (pip install mypy), and a C compiler. Unset HERALD_MYPYC for pure Python."
        )
    return list(mypycify(compiled_modules(), opt_level="3", group_name="herald_core"))


setup(ext_modules=ext_modules())
