"""Worker side of pit: what adapter code imports. Pulls in nothing host-side."""

from .adapter import Adapter, tool
from .context import HostToolError, SessionContext, current_context
from .runner import CallCancelled

__all__ = ["Adapter", "tool", "SessionContext", "current_context", "HostToolError",
           "CallCancelled"]
