"""Test support for projects using pit: the pytest plugin (`runtime.testing.plugin`, loaded
through the ``pytest11`` entry point), the `PoolFixture` its ``pit_pool`` fixture gives, and
the leak check it runs (`runtime.testing.leaks`).

Names resolve lazily: pytest imports the plugin at every start, also in runs that start no
pool, and the host side (gRPC, the pool) loads only once a test asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy

if TYPE_CHECKING:
    from .leaks import pid_alive as pid_alive
    from .leaks import pit_processes as pit_processes
    from .leaks import registered_instances as registered_instances
    from .pool_fixture import PoolFixture as PoolFixture

_EXPORTS = {
    "PoolFixture": "runtime.testing.pool_fixture",
    "pid_alive": "runtime.testing.leaks",
    "pit_processes": "runtime.testing.leaks",
    "registered_instances": "runtime.testing.leaks",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS, globals())
