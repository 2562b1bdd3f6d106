"""Which pool a call that names none goes to: one rule for `runtime.execute()` /
`Pools.default` and for the host's ExecuteTool (`host.tool_router`).

    the config's ``default_pool``  ->  the only pool, or the one named "default"
      ->  the only pool whose workers have the tool  ->  an error naming the pools that do
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..config import DEFAULT_POOL
from ..errors import PoolNotFound, ToolNotFound

PICK = 'add default_pool = "NAME" at the top of the config, or name the pool'


def choose_default(tool: str | None, names: Sequence[str], has_tool: Callable[[str], bool], *,
                   preferred: str | None = None, how_to_name: str = "") -> str:
    """The name of the pool for ``tool`` among ``names`` (running pools, at least one);
    ``has_tool(name)`` says whether that pool's workers have the tool. Raises PoolNotFound
    (several pools could run it) or ToolNotFound (none can); ``how_to_name`` ends the hint."""
    if preferred is not None and preferred in names:
        return preferred
    if len(names) == 1:
        return names[0]
    if DEFAULT_POOL in names:
        return DEFAULT_POOL
    hint = PICK + (f": {how_to_name}" if how_to_name else "")
    listed = ", ".join(names)
    if tool is None:
        raise PoolNotFound(f"several pools ({listed}), no default_pool and none named "
                           f"{DEFAULT_POOL!r}", hint=hint)
    having = [name for name in names if has_tool(name)]
    if len(having) == 1:
        return having[0]
    if having:
        raise PoolNotFound(f"tool {tool!r} is in several pools ({', '.join(having)}) and the "
                           "config has no default_pool", details={"tool": tool}, hint=hint)
    raise ToolNotFound(f"no pool has a tool {tool!r}; pools: {listed}", details={"tool": tool},
                       hint="check the tool's name (`pit status` lists each pool's tools), "
                            "or name the pool")
