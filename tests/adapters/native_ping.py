"""A pit adapter whose `ping` does what the Snakepit showcase's does: the native side of the
serial-latency comparison in tests/integration/test_snakepit_adapters.py."""

from __future__ import annotations

import time
from typing import Any

from runtime import Adapter, tool


class NativePing(Adapter):
    @tool
    def ping(self, message: str = "pong") -> dict[str, Any]:
        return {"message": message, "timestamp": str(time.time())}
