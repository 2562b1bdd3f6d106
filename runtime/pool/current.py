"""The pools of the running program, as `pit run` sets them up.

A script started with ``pit run script.py`` calls ``runtime.execute("tool", {...})`` or picks a
pool with ``runtime.current_pools()["name"]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import PoolNotReady
from .sync_pool import Pools

current_call: list[Pools] = []  # the one registry of "current" pools, set by set_current_pools


def set_current_pools(pools: Pools | None) -> None:
    current_call.clear()
    if pools is not None:
        current_call.append(pools)


def current_pools() -> Pools:
    """The pools started by `pit run` (or registered with set_current_pools)."""
    if not current_call:
        raise PoolNotReady("no pools are running in this process",
                           hint="start the script with `pit run script.py`, or create a "
                                "runtime.Pool / runtime.Pools yourself")
    return current_call[0]


def execute(tool: str, args: Mapping[str, Any] | None = None, *, pool: str | None = None,
            **options: Any) -> Any:
    """Call ``tool`` on the pool named ``pool``, else the current default pool (see
    `Pools.default`: ``default_pool`` in the config, or the only pool that has ``tool``)."""
    pools = current_pools()
    target = pools[pool] if pool else pools.default(tool)
    return target.execute(tool, args, **options)


def stream(tool: str, args: Mapping[str, Any] | None = None, *, pool: str | None = None,
           **options: Any) -> Iterator[Any]:
    """Stream ``tool``'s items from the pool named ``pool``, else the current default pool
    (chosen as for `execute`)."""
    pools = current_pools()
    target = pools[pool] if pool else pools.default(tool)
    return target.stream(tool, args, **options)
