"""Routing the host's ExecuteTool without processes: which pool or host tool a call reaches,
what of a client's request reaches a worker, the error payload, the TCP token check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from runtime.errors import PoolNotFound, RemoteError, ToolNotFound, from_payload
from runtime.pool.host.host_bridge import token_matches
from runtime.pool.host.host_tools import HostToolRegistry, make_host_tool
from runtime.pool.host.tool_router import (
    ToolRouter,
    choose,
    error_json,
    forwarded_metadata,
    request_args,
)
from runtime.protocol import codec, pb


@dataclass
class FakePool:
    """A running pool with some tools; records the calls it is given."""

    name: str
    tools: tuple[str, ...] = ("add",)
    state: str = "running"
    calls: list[Any] = field(default_factory=list)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def tool_spec(self, name: str) -> dict[str, Any] | None:
        return {"name": name} if name in self.tools else None

    def prepare(self, tool: str, args: Mapping[str, Any] | None, session_id: str | None,
                metadata: Mapping[str, str] | None, big: dict[str, Any] | None = None) -> Any:
        if tool not in self.tools:
            raise ToolNotFound(f"pool {self.name!r} has no tool {tool!r}")
        return (tool, dict(args or {}), session_id, dict(metadata or {}))

    async def call(self, req: Any, timeout: float | None, **_: Any) -> Any:
        self.calls.append((req, timeout))
        tool, args, _, _ = req
        if tool == "fail":
            raise RemoteError(f"tool {tool!r} raised ValueError: boom", remote_type="ValueError",
                              remote_traceback="Traceback...\nValueError: boom\n")
        return {"pool": self.name, **args}

    async def stream(self, req: Any, timeout: float | None) -> AsyncIterator[Any]:
        for i in range(req[1]["n"]):
            yield i


def request(tool: str, args: dict[str, Any] | None = None, session_id: str = "",
            **metadata: str) -> Any:
    req = pb.ExecuteToolRequest(tool_name=tool, session_id=session_id, metadata=metadata)
    codec.encode_params(req, args or {})
    return req


def test_a_named_pool_wins_then_a_host_tool_then_the_default_pool() -> None:
    reg = HostToolRegistry()
    reg.register(make_host_tool("add", lambda a, b: "host"))
    default, other = FakePool("default"), FakePool("other")
    pools = [default, other]
    assert choose("add", {"pool": "other"}, "", reg, pools) is other
    assert choose("add", {}, "", reg, pools).name == "add"  # type: ignore[union-attr]
    assert choose("sub", {}, "", reg, pools) is default
    assert choose("sub", {}, "", reg, [other]) is other  # the only pool
    with pytest.raises(PoolNotFound, match="no pool named 'x' on this host; pools: default"):
        choose("add", {"pool": "x"}, "", reg, pools)
    with pytest.raises(ToolNotFound, match="no pool has a tool 'sub'; pools: a, b"):
        choose("sub", {}, "", reg, [FakePool("a"), FakePool("b")])
    with pytest.raises(PoolNotFound, match="no pool is running"):
        choose("sub", {}, "", reg, [FakePool("default", state="closed")])


def test_without_a_default_the_only_pool_with_the_tool_runs_it() -> None:
    reg = HostToolRegistry()
    a, b, c = FakePool("a", tools=("add", "mul")), FakePool("b", tools=("add",)), FakePool("c")
    assert choose("mul", {}, "", reg, [a, b, c]) is a
    with pytest.raises(PoolNotFound, match=r"tool 'add' is in several pools \(a, b, c\)") as err:
        choose("add", {}, "", reg, [a, b, c])
    assert err.value.hint and "metadata pool = <name>" in err.value.hint
    assert choose("add", {}, "", reg, [a, b, c], preferred="b") is b  # the config's default_pool
    assert choose("mul", {}, "", reg, [a, b, c], preferred="b") is b  # wins, tool or not


def test_a_session_scoped_host_tool_routes_only_for_its_session() -> None:
    reg = HostToolRegistry()
    reg.register(make_host_tool("add", lambda a, b: "s1's", session_id="s1"))
    pool = FakePool("default")
    assert choose("add", {}, "s1", reg, [pool]).name == "add"  # type: ignore[union-attr]
    assert choose("add", {}, "s2", reg, [pool]) is pool


def test_a_client_cannot_pass_pits_private_metadata_to_a_worker() -> None:
    metadata = {"correlation_id": "c1", "user": "u", "pool": "p", "pit_shm_arg:x": "/etc/x",
                "pit_shm_out": "/tmp/y", "pit_map": "1", "binary_format:x": "pickle",
                "result_format": "pickle"}
    assert forwarded_metadata(metadata) == {"correlation_id": "c1", "user": "u"}


def test_arguments_are_read_from_the_request_never_from_shared_memory_or_pickle() -> None:
    req = request("t", {"a": 1, "raw": b"\x00\x01"}, **{"pit_shm_arg:evil": "/etc/passwd:0:9"})
    assert request_args(req) == {"a": 1, "raw": b"\x00\x01"}
    req = request("t", {"p": codec.Pickled([1])})
    with pytest.raises(Exception, match="does not allow pickle"):
        request_args(req)


def test_the_error_payload_is_a_workers_so_clients_decode_it_the_same_way() -> None:
    remote = RemoteError("tool 'fail' raised ValueError: boom", remote_type="ValueError",
                         remote_traceback="Traceback...\nValueError: boom\n")
    payload = orjson.loads(error_json(remote, "fail", "s1"))
    assert (payload["type"], payload["message"], payload["category"]) == (
        "ValueError", "boom", "remote_error")
    assert payload["context"] == {"tool_name": "fail", "session_id": "s1"}
    again = from_payload(payload, "fail", {})
    assert str(again) == str(remote) and again.remote_traceback == remote.remote_traceback
    missing = from_payload(orjson.loads(error_json(
        ToolNotFound("no such tool", hint="try another"), "x")), "x", {})
    assert isinstance(missing, ToolNotFound) and str(missing) == "no such tool"
    plain = orjson.loads(error_json(KeyError("k"), "host_tool"))
    assert plain["type"] == "KeyError" and "category" not in plain  # a host tool's own error


def test_the_router_calls_pools_and_host_tools_and_answers_errors_as_payloads() -> None:
    reg = HostToolRegistry()
    reg.register(make_host_tool("hello", lambda who: f"hi {who}"))
    default, other = FakePool("default"), FakePool("other", tools=("add", "count"))
    router = ToolRouter(reg, lambda: [default, other])

    async def main() -> None:
        resp = await router.execute(request("add", {"a": 1}, session_id="s", user="u"), 5.0)
        assert codec.decode_result(resp) == {"pool": "default", "a": 1}
        (sent, timeout), = default.calls
        assert sent == ("add", {"a": 1}, "s", {"user": "u"}) and timeout == 5.0
        resp = await router.execute(request("hello", {"who": "x"}), None)
        assert codec.decode_result(resp) == "hi x"
        resp = await router.execute(request("count"), None)  # not in the default pool
        assert not resp.success
        payload = codec.decode_error(resp.error_message)
        assert payload["message"].startswith("no host tool 'count', and pool 'default' has")
        assert payload["hint"].startswith("pool 'other' has it")
        resp = await router.execute(request("fail"), None)
        assert codec.decode_error(resp.error_message)["type"] == "ToolNotFound"
        chunks = [c async for c in router.stream(request("count", {"n": 3}, pool="other"),
                                                 None)]
        assert [codec.decode_chunk(c) for c in chunks[:-1]] == [0, 1, 2]
        assert chunks[-1].is_final and chunks[-1].metadata["empty"] == "true"

    asyncio.run(main())


def test_the_token_must_match_exactly() -> None:
    token = "0123456789abcdef"
    assert token_matches((("authorization", f"Bearer {token}"),), token)
    assert token_matches((("x", "y"), ("Authorization", f"Bearer {token}")), token)
    for bad in ((), None, (("authorization", token),), (("authorization", f"Bearer {token}x"),),
                (("authorization", "Bearer "),)):
        assert not token_matches(bad, token)
