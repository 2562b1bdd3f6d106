"""Test support for projects using pit: the pytest plugin (`runtime.testing.plugin`, loaded
through the ``pytest11`` entry point) and the leak check it runs (`runtime.testing.leaks`)."""

from __future__ import annotations

from .leaks import pid_alive, pit_processes, registered_instances
from .pool_fixture import PoolFixture

__all__ = ["PoolFixture", "pid_alive", "pit_processes", "registered_instances"]
