"""Lazy package exports: a package's names imported from its submodules on first use, so that `mdm --help`, config
errors and the registries load without torch or pandas.

    __getattr__, __all__ = lazy_exports(__name__, {"Trainer": "trainer", "RunConfig": "config"})
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """(module `__getattr__`, `__all__`) for `package`; `exports` maps each name to its submodule."""

    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
