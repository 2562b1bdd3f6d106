"""One call against a fresh pool of the project's config (`pit call POOL TOOL ARGS`): start
that pool alone, run the call, close the pool, whatever happened."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import load_config


def call_once(pool: str, tool: str, args: Mapping[str, Any] | None = None, *,
              config: str | Path | None = None, timeout: float | None = None,
              python_path: list[str] | None = None) -> Any:
    """The result of ``tool`` run once by a fresh ``pool`` of ``config`` (default: the
    nearest pit.toml / pyproject.toml, else the built-in showcase pool "default"). Raises
    what starting the pool or the call raised (PitError)."""
    from .pool.sync_pool import Pools

    pools = Pools(load_config(config), only=[pool], python_path=python_path)
    try:
        pools.start()
        return pools[pool].execute(tool, args, timeout=timeout)
    finally:
        pools.close()
