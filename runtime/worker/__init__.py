"""Worker side of pit: what adapter code imports. Pulls in nothing host-side.

Names resolve lazily, so `python -m runtime.worker` reaches its own first lines (which set up
its signals) without importing the runner first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy

if TYPE_CHECKING:
    from .adapter import Adapter, tool
    from .context import HostToolError, SessionContext, current_context
    from .runner import CallCancelled

_EXPORTS = {"Adapter": "runtime.worker.adapter", "tool": "runtime.worker.adapter",
            "HostToolError": "runtime.worker.context",
            "SessionContext": "runtime.worker.context",
            "current_context": "runtime.worker.context", "CallCancelled": "runtime.worker.runner"}

__all__ = ["Adapter", "tool", "SessionContext", "current_context", "HostToolError",
           "CallCancelled"]


__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS, globals())
