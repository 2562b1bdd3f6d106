from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import pytest

from runtime.worker.adapter import Adapter, ArgumentError, collect_tools, tool


class Thing(Adapter):
    @tool
    def plain(self, a: int, b: str = "x", c: Optional[float] = None) -> str:  # noqa: UP045
        """First line.

        More."""
        return b * a

    @tool(name="other", description="custom")
    def renamed(self, ctx: Any, **kw: Any) -> dict:
        return kw

    @tool
    async def coro(self, items: list[int]) -> int:
        return sum(items)

    @tool
    def gen(self, n: int) -> Iterator[int]:
        yield from range(n)

    def not_a_tool(self) -> None:
        pass


class Child(Thing):
    @tool
    def extra(self, flag: bool) -> bool:
        return flag


def test_tools_are_found_with_kinds_and_params() -> None:
    tools = collect_tools(Child)
    assert set(tools) == {"plain", "other", "coro", "gen", "extra"}
    plain = tools["plain"]
    assert plain.kind == "sync" and plain.description == "First line."
    assert [(p.name, p.type, p.required, p.default) for p in plain.params] == [
        ("a", "integer", True, None), ("b", "string", False, "x"),
        ("c", "float?", False, None)]
    assert tools["other"].description == "custom" and tools["other"].wants_ctx
    assert tools["coro"].kind == "async" and tools["gen"].streaming


def test_bind_checks_names_and_types() -> None:
    plain = collect_tools(Thing)["plain"]
    assert plain.bind({"a": 2}) == {"a": 2}
    assert plain.bind({"a": 2, "c": 1}) == {"a": 2, "c": 1}  # int is fine for float
    assert plain.bind({"a": 2, "c": None}) == {"a": 2, "c": None}
    with pytest.raises(ArgumentError, match="missing required parameter 'a'"):
        plain.bind({})
    with pytest.raises(ArgumentError, match="unknown parameter 'z'"):
        plain.bind({"a": 1, "z": 1})
    with pytest.raises(ArgumentError, match="parameter 'a' must be integer, got bool"):
        plain.bind({"a": True})
    with pytest.raises(ArgumentError, match="parameter 'b' must be string, got int"):
        plain.bind({"a": 1, "b": 5})
    assert collect_tools(Thing)["other"].bind({"anything": 1}) == {"anything": 1}
    with pytest.raises(ArgumentError, match="'items' must be list"):
        collect_tools(Thing)["coro"].bind({"items": "no"})
