"""`pool_choice.choose_default`: the pool a call that names none goes to, for
runtime.execute(), the host's ExecuteTool and the pit_pool fixture."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.errors import PoolNotFound, ToolNotFound
from runtime.pool.pool_choice import choose_default

TOOLS = {"a": {"add", "mul"}, "b": {"add"}, "c": {"add"}}


def has(tool: str) -> Callable[[str], bool]:
    return lambda name: tool in TOOLS.get(name, set())


@pytest.mark.parametrize(("tool", "names", "preferred", "chosen"), [
    ("add", ["a", "b"], "b", "b"),            # default_pool first
    ("mul", ["a", "b"], "b", "b"),            # ... tool or not
    ("add", ["c"], None, "c"),                # the only pool
    ("add", ["a", "default"], None, "default"),
    ("mul", ["a", "b", "c"], None, "a"),      # the only pool that has the tool
    ("add", ["a", "b"], "gone", None),        # a default_pool not running: as without one
])
def test_the_pool_chosen(tool: str, names: list[str], preferred: str | None,
                         chosen: str | None) -> None:
    if chosen is None:
        with pytest.raises(PoolNotFound):
            choose_default(tool, names, has(tool), preferred=preferred)
    else:
        assert choose_default(tool, names, has(tool), preferred=preferred) == chosen


def test_the_errors_name_the_pools_and_how_to_pick_one() -> None:
    with pytest.raises(PoolNotFound, match=r"tool 'add' is in several pools \(a, b, c\)") as err:
        choose_default("add", ["a", "b", "c"], has("add"), how_to_name="pool=NAME")
    assert err.value.hint == 'add default_pool = "NAME" at the top of the config, or name the ' \
                             "pool: pool=NAME"
    with pytest.raises(ToolNotFound, match=r"no pool has a tool 'div'; pools: a, b"):
        choose_default("div", ["a", "b"], has("div"))
    with pytest.raises(PoolNotFound, match=r"several pools \(a, b\), no default_pool and none "
                                           "named 'default'"):
        choose_default(None, ["a", "b"], has("add"))
