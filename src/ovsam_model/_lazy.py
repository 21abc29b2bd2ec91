"""Package attributes that load their module on first use (PEP 562), so that importing a package, or a light
submodule of it, does not pay for torch, open_clip and pycocotools up front."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that resolves ``name`` from its submodule ``exports[name]``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    return __getattr__
