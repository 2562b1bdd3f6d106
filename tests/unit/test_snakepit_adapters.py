"""Snakepit adapters hosted by pit's worker, without processes: classes shaped like the
bridge's (its registration API, execute_tool dispatch, per-call lifecycle) but defined here,
so these run without Snakepit's checkout. tests/integration/test_snakepit_adapters.py runs
the real bridge's showcase."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.worker import Adapter
from runtime.worker.adapter import collect_tools
from runtime.worker.context import HostClient, SessionContext, current_call
from runtime.worker.main import load_adapter_class
from runtime.worker.snakepit_adapters import (
    BridgeHost,
    BridgeSessionContext,
    host_class,
    is_bridge_adapter,
    settle,
)
from tests.adapters.sample import SampleAdapter

EVENTS: list[str] = []


def marked(description: str = "", supports_streaming: bool = False) -> Any:
    """The bridge's @tool: metadata on the function, read back by get_tools()."""
    def mark(fn: Any) -> Any:
        fn._tool_metadata = SimpleNamespace(description=description,
                                            supports_streaming=supports_streaming)
        return fn
    return mark


class FakeBase:
    """What BaseAdapter offers: get_tools() registrations (plus the legacy marker entry when
    there is an execute_tool), set_session_context()."""

    def set_session_context(self, ctx: Any) -> None:
        self.session_context = ctx
        EVENTS.append(f"context {ctx.session_id}")

    def get_tools(self) -> list[Any]:
        regs = [SimpleNamespace(name=name, description=fn._tool_metadata.description,
                                supports_streaming=fn._tool_metadata.supports_streaming,
                                parameters=[])
                for name, fn in vars(type(self)).items() if hasattr(fn, "_tool_metadata")]
        if hasattr(self, "execute_tool"):
            regs.append(SimpleNamespace(name="execute_tool", description="Legacy",
                                        supports_streaming=False, parameters=[]))
        return regs


class Modern(FakeBase):
    def initialize(self) -> None:
        EVENTS.append("initialize")

    async def cleanup(self) -> None:
        EVENTS.append("cleanup")

    @marked("Scale x")
    def scale(self, x: float, factor: int = 2) -> float:
        return x * factor

    @marked("Chunks", supports_streaming=True)
    def chunks(self, n: int) -> Iterator[Any]:
        return iter([SimpleNamespace(data={"i": i}, is_final=i == n - 1) for i in range(n)])

    @marked("Async items", supports_streaming=True)
    async def agen(self, n: int) -> Any:
        for i in range(n):
            yield i

    @marked("Returns a generator it does not declare")
    def sneaky(self) -> Any:
        return (i for i in range(3))

    @marked("Async result")
    async def later(self, x: int) -> int:
        await asyncio.sleep(0)
        return x + 1


class Handler:
    def get_tools(self) -> dict[str, Any]:
        return {"ping": SimpleNamespace(func=self.ping), "count": SimpleNamespace(func=self.count)}

    def ping(self, ctx: Any, message: str = "pong") -> dict[str, Any]:
        """Answer."""
        return {"message": message, "session": ctx.session_id}

    def count(self, ctx: Any, n: int) -> Iterator[int]:
        yield from range(n)


class Legacy(FakeBase):
    def __init__(self) -> None:
        self.handlers = {"basic": Handler()}
        self.tools = self.handlers["basic"].get_tools()

    def cleanup(self) -> None:
        raise RuntimeError("cleanup is broken")  # printed, never the call's error

    def execute_tool(self, tool_name: str, arguments: dict[str, Any], context: Any) -> Any:
        EVENTS.append(f"execute {tool_name}")
        if tool_name in self.tools:
            return self.tools[tool_name].func(context, **arguments)
        return getattr(self, tool_name)(**arguments)

    @marked("Add")
    def add(self, a: float, b: float) -> float:
        return a + b


@pytest.fixture
def ctx() -> Iterator[SessionContext]:
    EVENTS.clear()
    context = SessionContext(session_id="s1", metadata={"correlation_id": "c1"}, tool_name="t",
                             deadline=None, sessions={}, host=HostClient(None))
    token = current_call.set(context)
    yield context
    current_call.reset(token)


def run(cls: type, name: str, **args: Any) -> Any:
    host = host_class(cls)
    adapter = host()
    adapter.initialize()
    info = collect_tools(host)[name]
    out = info.fn(adapter, **info.bind(args))
    return list(out) if info.streaming else out


def test_only_bridge_shaped_classes_are_hosted() -> None:
    assert is_bridge_adapter(Modern) and is_bridge_adapter(Legacy)
    assert not is_bridge_adapter(SampleAdapter)
    assert not is_bridge_adapter(dict)
    host = host_class(Legacy)
    assert host is host_class(Legacy) and issubclass(host, BridgeHost)
    assert issubclass(host, Adapter) and host.legacy and not host_class(Modern).legacy


def test_catalogue_from_registrations_and_handlers_with_mirrored_parameters() -> None:
    tools = collect_tools(host_class(Legacy))
    assert sorted(tools) == ["add", "count", "ping"]  # "execute_tool" is a marker, not a tool
    assert tools["count"].streaming and not tools["ping"].streaming
    assert tools["ping"].description == "Answer."
    assert [p.to_dict() for p in tools["ping"].params] == [
        {"name": "message", "type": "string", "required": False, "default": "pong"}]
    modern = collect_tools(host_class(Modern))
    assert modern["chunks"].streaming and modern["agen"].streaming
    assert not modern["scale"].streaming and modern["scale"].description == "Scale x"
    assert [(p.name, p.type, p.required) for p in modern["scale"].params] == [
        ("x", "float", True), ("factor", "integer", False)]
    with pytest.raises(ValueError, match="must be integer"):
        modern["scale"].bind({"x": 1.0, "factor": "3"})


def test_each_call_gets_a_fresh_adapter_with_context_initialize_and_cleanup(
        ctx: SessionContext) -> None:
    assert run(Modern, "scale", x=1.5) == 3.0
    assert EVENTS == ["context s1", "initialize", "cleanup"]
    assert run(Modern, "later", x=1) == 2  # async tools, async cleanup
    assert run(Legacy, "ping") == {"message": "pong", "session": "s1"}
    assert run(Legacy, "add", a=1, b=2) == 3
    assert "execute add" in EVENTS  # execute_tool dispatches everything it has


def test_streams_unwrap_chunks_and_read_async_iterators(ctx: SessionContext) -> None:
    assert run(Modern, "chunks", n=3) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert run(Modern, "agen", n=3) == [0, 1, 2]
    assert run(Legacy, "count", n=2) == [0, 1]
    assert EVENTS.count("cleanup") == 2


def test_an_undeclared_generator_result_is_an_error(ctx: SessionContext) -> None:
    with pytest.raises(TypeError, match="not registered as streaming"):
        run(Modern, "sneaky")
    assert EVENTS[-1] == "cleanup"


def test_the_session_context_has_the_bridges_surface(ctx: SessionContext) -> None:
    bridge = BridgeSessionContext(ctx)
    assert bridge.session_id == "s1" and bridge.request_metadata["correlation_id"] == "c1"
    assert bridge.pit is ctx and bridge.stub is None
    assert bridge.elixir_tools == {}  # no host to ask: empty, as in Snakepit
    with pytest.raises(ValueError, match="'double' not found"):
        bridge.call_elixir_tool("double", x=1)
    with bridge as same:
        assert same is bridge and repr(bridge) == "SessionContext(session_id='s1')"


def test_settle_resolves_awaitables_on_a_loop_of_this_thread() -> None:
    async def three() -> int:
        return 3

    async def fails() -> None:
        raise KeyError("x")

    assert settle(three()) == 3 and settle(4) == 4
    with pytest.raises(KeyError):
        settle(fails())
    assert settle(three()) == 3  # the loop survives a failed call


def test_load_adapter_class_takes_the_dotted_form() -> None:
    assert load_adapter_class("tests.adapters.sample.SampleAdapter") is SampleAdapter
    assert load_adapter_class("tests.adapters.sample:SampleAdapter") is SampleAdapter
    with pytest.raises(ValueError, match="Snakepit's 'package.module.ClassName'"):
        load_adapter_class("nodots")
