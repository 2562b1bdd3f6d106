"""Host tools without processes: specs from signatures and from what the caller says, the
registry's session scopes, running sync / async / generator tools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from runtime.errors import InvalidArgument, ToolNotFound
from runtime.pool.host.host_tools import HostToolRegistry, make_host_tool
from runtime.protocol import codec


def lookup(user_id: int, verbose: bool = False, *, tags: list[str] | None = None) -> dict:
    """Find a user.

    More text that is not the description."""
    return {"user_id": user_id}


def test_the_spec_comes_from_the_signature_and_docstring() -> None:
    spec = make_host_tool("lookup", lookup).spec()
    assert (spec.name, spec.description, spec.supports_streaming) == (
        "lookup", "Find a user.", False)
    params = {p.name: p for p in spec.parameters}
    assert [(p.name, p.type, p.required) for p in spec.parameters] == [
        ("user_id", "integer", True), ("verbose", "boolean", False), ("tags", "list?", False)]
    assert codec.loads(params["verbose"].default_value.value, "default") is False
    assert not params["user_id"].default_value.value
    assert dict(spec.metadata) == {}


def test_given_description_and_parameters_win_and_fill_in_from_the_signature() -> None:
    tool = make_host_tool("lookup", lookup, description="Look one up", session_id="s1",
                          parameters={"user_id": {"description": "whose"},
                                      "verbose": "boolean?"})
    spec = tool.spec()
    assert spec.description == "Look one up" and dict(spec.metadata) == {"session_id": "s1"}
    assert [(p.name, p.type, p.required, p.description) for p in spec.parameters] == [
        ("user_id", "integer", True, "whose"), ("verbose", "boolean?", False, "")]


@pytest.mark.parametrize(("parameters", "message"), [
    ({"nope": "integer"}, "'nope' is not one of the function's"),
    ({"user_id": {"kind": "integer"}}, "unknown key 'kind'"),
    ({"user_id": 3}, "must be a dict"),
    (["user_id"], "must be a mapping"),
])
def test_bad_parameter_specs_are_refused_naming_the_fault(parameters: object,
                                                          message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make_host_tool("lookup", lookup, parameters=parameters)  # type: ignore[arg-type]


def test_a_function_taking_kwargs_may_describe_any_parameter() -> None:
    spec = make_host_tool("any", lambda **kw: kw, parameters={"x": "integer"}).spec()
    assert [(p.name, p.type) for p in spec.parameters] == [("x", "integer")]


def test_names_and_functions_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="callable"):
        make_host_tool("x", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="non-empty string"):
        make_host_tool("", lookup)


def test_a_session_scoped_tool_is_seen_only_by_its_session_and_shadows_the_global() -> None:
    reg = HostToolRegistry()
    reg.register(make_host_tool("a", lambda: "global"))
    reg.register(make_host_tool("a", lambda: "s1's", session_id="s1"))
    reg.register(make_host_tool("b", lambda: "s1 only", session_id="s1"))
    assert [t.name for t in reg.visible("")] == ["a"]
    assert [t.name for t in reg.visible("s2")] == ["a"]
    assert [(t.name, t.session_id) for t in reg.visible("s1")] == [("a", "s1"), ("b", "s1")]
    assert reg.lookup("a", "s1").fn() == "s1's"  # type: ignore[union-attr]
    assert reg.lookup("a", "s2").fn() == "global"  # type: ignore[union-attr]
    assert reg.lookup("b", "s2") is None and reg.lookup("b", "") is None
    err = reg.unknown("b", "s2")
    assert isinstance(err, ToolNotFound)
    assert str(err) == "unknown host tool 'b' for session 's2'; host tools: a"


def test_unregister_removes_from_one_scope_only() -> None:
    reg = HostToolRegistry()
    reg.register(make_host_tool("a", lambda: 1))
    reg.register(make_host_tool("a", lambda: 2, session_id="s1"))
    assert reg.unregister("a", "s1") is True
    assert reg.unregister("a", "s1") is False
    assert reg.lookup("a", "s1").fn() == 1  # type: ignore[union-attr]
    assert reg.unregister("a") is True and reg.visible("s1") == []


def test_tools_run_sync_on_a_thread_async_on_the_loop_and_stream_generators() -> None:
    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    async def agen(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def coro(x: int) -> int:
        return x + 1

    async def main() -> None:
        assert await make_host_tool("s", lambda x: x * 2).run({"x": 2}) == 4
        assert await make_host_tool("c", coro).run({"x": 2}) == 3
        assert make_host_tool("g", gen).spec().supports_streaming
        assert [i async for i in make_host_tool("g", gen).items({"n": 3})] == [0, 1, 2]
        assert [i async for i in make_host_tool("a", agen).items({"n": 2})] == [0, 1]
        assert [i async for i in make_host_tool("c", coro).items({"x": 1})] == [2]

    asyncio.run(main())
