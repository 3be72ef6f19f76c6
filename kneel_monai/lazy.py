"""Package names that import their module on first use (PEP 562).

The inference path (``kneel predict``, the Slicer module's worker) must not import MONAI or the
training code just because a package's ``__init__`` names them (:mod:`kneel_monai.image` says why);
a package lists where each name lives and imports it when it is first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, where: Mapping[str, Sequence[str]], namespace: dict[str, Any]
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose names live in the submodules ``where``
    lists (``{submodule: [names]}``); ``namespace`` is the package's ``globals()``, where a name is kept
    once imported."""
    module_of = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return sorted(module_of), __getattr__, __dir__
