"""Which compiled parts (Cython, built by ``make setup``) are in use.

Every compiled module has a pure-Python reference it was written from, with the same
results; :func:`load` gives the compiled module, or None when it was not built or
``RETAPE_PURE_PYTHON`` is set (to a value other than ``0``), and the caller uses the
reference.  The tests run both."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_ENV = "RETAPE_PURE_PYTHON"
MODULES = ("shared.checks._shapes_c", "shared._book_c", "shared._lane_c")


def wanted() -> bool:
    return os.environ.get(PURE_ENV, "").strip() in ("", "0")


def load(name: str) -> ModuleType | None:
    if not wanted():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def built() -> dict[str, bool]:
    """Each compiled module and whether it is built here (whatever the environment says)."""
    out = {}
    for name in MODULES:
        try:
            importlib.import_module(name)
            out[name] = True
        except ImportError:
            out[name] = False
    return out
