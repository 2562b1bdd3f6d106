"""Worker side of pit: what adapter code imports. Pulls in nothing host-side.

Names resolve lazily, so `python -m runtime.worker` reaches its own first lines (which set up
its signals) without importing the runner first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import Adapter, tool
    from .context import HostToolError, SessionContext, current_context
    from .runner import CallCancelled

_EXPORTS = {"Adapter": ".adapter", "tool": ".adapter", "HostToolError": ".context",
            "SessionContext": ".context", "current_context": ".context",
            "CallCancelled": ".runner"}

__all__ = ["Adapter", "tool", "SessionContext", "current_context", "HostToolError",
           "CallCancelled"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime.worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
