"""An adapter whose tools print, for the tests of worker output (`pit logs`, `pit run`)."""

from __future__ import annotations

import logging
import sys

from runtime import Adapter, tool


class Printer(Adapter):
    @classmethod
    def preload(cls) -> None:
        print("preloaded in the fork server")

    @tool
    def say(self, text: str, err: bool = False, times: int = 1) -> int:
        """Print ``text`` (to stderr with ``err``) ``times`` times, without flushing: the
        worker's streams must not hold it back."""
        for _ in range(times):
            print(text, file=sys.stderr if err else sys.stdout)
        return times

    @tool
    def log(self, text: str) -> None:
        """Log ``text`` at WARNING through a logger nobody configured."""
        logging.getLogger("printer.tool").warning(text)

    @tool
    def say_long(self, size: int) -> int:
        """One line of ``size`` characters (longer than a pipe reader's line limit)."""
        print("x" * size)
        print("after the long line")
        return size
