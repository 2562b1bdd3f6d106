"""Names a package exports lazily (PEP 562), so importing the package loads none of them:

    _EXPORTS = {"Pool": "runtime.pool.sync_pool", ...}
    __getattr__, __dir__ = lazy.exports(__name__, _EXPORTS, globals())

The first access imports the named module and caches the value in the package's globals.
Imports nothing but importlib (and, for type checkers, typing).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing costs ~10 ms here (re, enum); type checkers read this name
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def exports(package: str, names: Mapping[str, str], namespace: dict[str, Any]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package``: each name of ``names`` comes from the
    module named beside it, imported on first use."""

    def getattr_(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(names))

    return getattr_, dir_
