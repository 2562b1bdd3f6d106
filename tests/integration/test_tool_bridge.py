"""The two-way tool bridge (issue 15 D), over real gRPC and real workers: a plain gRPC client
calls pools' tools and host tools through the host's ExecuteTool / ExecuteStreamingTool; a
worker calls another pool's tool through the host; host tools scoped to a session; the TCP
listener serves ExecuteTool only with the [tool_bridge] token."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import runtime
from runtime import AsyncPool, Pools, load_config
from runtime.config import state_dir
from runtime.errors import from_payload
from runtime.pool.host.instance import HostInstance
from runtime.protocol import codec, pb, pb_grpc

SAMPLE = "tests.adapters.sample:SampleAdapter"
TOKEN = "s3cret-token-for-the-tests-0123456789"
DEADLINE_S = 30.0


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "pit.toml"
    path.write_text(textwrap.dedent(f"""
        [pools.default]
        size = 1
        [pools.sample]
        adapter = "{SAMPLE}"
        size = 1
    """) + textwrap.dedent(extra))
    return path


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Pools]:
    with Pools(load_config(write_config(tmp_path))) as p:
        yield p


def request(tool: str, args: dict[str, Any] | None = None, *, pool: str = "",
            session_id: str = "") -> Any:
    req = pb.ExecuteToolRequest(tool_name=tool, session_id=session_id)
    codec.encode_params(req, args or {})
    if pool:
        req.metadata["pool"] = pool
    return req


def result(resp: Any, tool: str) -> Any:
    """What a client gets back: the value, or the PitError the payload stands for."""
    if not resp.success:
        raise from_payload(codec.decode_error(resp.error_message), tool, {})
    return codec.decode_result(resp)


def chunks(stream: Any) -> list[Any]:
    return [codec.decode_chunk(c) for c in stream if not c.metadata.get("empty")]


def test_an_external_client_calls_pools_and_host_tools_through_host_sock(pools: Pools) -> None:
    def greet(who: str, punct: str = "!") -> str:
        """Say hello."""
        return f"hi {who}{punct}"

    pools.register_host_tool("greet", greet)
    with grpc.insecure_channel(pools.instance.host_address) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        call = lambda req: result(stub.ExecuteTool(req, timeout=DEADLINE_S), req.tool_name)  # noqa: E731
        # the default pool, the named one, a host tool: one ExecuteTool
        assert call(request("add", {"a": 2, "b": 40})) == 42
        assert call(request("record", {"tag": "x"}, pool="sample")) == 1
        assert call(request("greet", {"who": "ext"})) == "hi ext!"
        data = bytes(range(256))
        assert call(request("bytes_echo", {"data": data})) == data
        # streams, from a pool and from the host
        assert chunks(stub.ExecuteStreamingTool(request("stream_count", {"n": 3}),
                                                timeout=DEADLINE_S)) == [{"i": 1}, {"i": 2},
                                                                         {"i": 3}]
        assert chunks(stub.ExecuteStreamingTool(request("guarded_stream", {"n": 2},
                                                        pool="sample"),
                                                timeout=DEADLINE_S)) == [0, 1]
        # errors come back as a worker's payload: the tool's type and traceback kept
        with pytest.raises(runtime.RemoteError) as info:
            call(request("fail", {"message": "boom"}))
        assert info.value.remote_type == "ValueError"
        assert str(info.value) == "tool 'fail' raised ValueError: boom"
        assert "raise ValueError(message)" in (info.value.remote_traceback or "")
        with pytest.raises(grpc.RpcError) as rpc:
            list(stub.ExecuteStreamingTool(request("broken_stream", {"n": 2}, pool="sample"),
                                           timeout=DEADLINE_S))
        assert rpc.value.code() == grpc.StatusCode.INTERNAL
        assert codec.decode_error(rpc.value.details())["message"] == "stream broke"
        with pytest.raises(runtime.ToolNotFound, match="no host tool 'record', and pool "
                                                       "'default' has no tool 'record'"):
            call(request("record", {"tag": "y"}))
        with pytest.raises(runtime.PoolNotFound, match="no pool named 'nope'"):
            call(request("add", {"a": 1, "b": 1}, pool="nope"))
        assert call(request("get_history", pool="sample")) == ["x"]  # 'y' never ran


def test_a_host_tool_wins_over_a_pool_tool_of_its_name_unless_the_pool_is_named(
        pools: Pools) -> None:
    pools.register_host_tool("add", lambda a, b: f"host {a}+{b}")
    with grpc.insecure_channel(pools.instance.host_address) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        assert result(stub.ExecuteTool(request("add", {"a": 1, "b": 2}), timeout=DEADLINE_S),
                      "add") == "host 1+2"
        assert result(stub.ExecuteTool(request("add", {"a": 1, "b": 2}, pool="default"),
                                       timeout=DEADLINE_S), "add") == 3


def test_a_worker_calls_another_pools_tool_and_a_host_tool_through_the_host(
        pools: Pools) -> None:
    sample = pools["sample"]
    assert sample.execute("relay", {"tool": "add", "args": {"a": 20, "b": 22},
                                    "pool": "default"}) == 42
    pools.register_host_tool("triple", lambda x: 3 * x)
    assert sample.execute("relay", {"tool": "triple", "args": {"x": 5}}) == 15
    with pytest.raises(runtime.RemoteError, match="tool 'fail' of pool 'default' failed: "
                                                  "ValueError: deep") as info:
        sample.execute("relay", {"tool": "fail", "args": {"message": "deep"},
                                 "pool": "default"})
    assert info.value.remote_type == "HostToolError"


def test_session_scoped_host_tools_and_unregister(pools: Pools) -> None:
    def secret(level: int, note: str = "") -> str:
        return f"level {level} {note}".strip()

    pools.register_host_tool("shared", lambda: "everyone")
    pools.register_host_tool("secret", secret, session_id="s1", description="Only for s1",
                             parameters={"level": {"type": "integer",
                                                   "description": "how secret"}})
    sample = pools["sample"]
    mine = sample.execute("host_tool_specs", session_id="s1")
    assert sorted(mine) == ["secret", "shared"]
    assert mine["secret"]["description"] == "Only for s1"
    assert mine["secret"]["session_id"] == "s1"
    assert mine["secret"]["parameters"] == {
        "level": {"type": "integer", "required": True, "description": "how secret"}}
    assert sorted(sample.execute("host_tool_specs", session_id="s2")) == ["shared"]
    assert sample.execute("relay", {"tool": "secret", "args": {"level": 2}},
                          session_id="s1") == "level 2"
    with pytest.raises(runtime.RemoteError,
                       match="no host tool 'secret' for session 's2', and pool 'default'"):
        sample.execute("relay", {"tool": "secret", "args": {"level": 2}}, session_id="s2")
    with grpc.insecure_channel(pools.instance.host_address) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        listed = stub.GetExposedElixirTools(pb.GetExposedElixirToolsRequest(session_id="s2"),
                                            timeout=DEADLINE_S)
        assert [t.name for t in listed.tools] == ["shared"]
        resp = stub.ExecuteElixirTool(pb.ExecuteElixirToolRequest(
            session_id="s2", tool_name="secret"), timeout=DEADLINE_S)
        assert not resp.success and "unknown host tool 'secret'" in resp.error_message

    assert pools.unregister_host_tool("secret", session_id="s1") is True
    assert pools.unregister_host_tool("secret", session_id="s1") is False
    assert sorted(sample.execute("host_tool_specs", session_id="s1")) == ["shared"]
    assert sample.unregister_host_tool("shared") is True
    with pytest.raises(runtime.RemoteError, match="no host tool 'shared', and pool"):
        sample.execute("relay", {"tool": "shared"})


def test_the_bridge_tcp_listener_serves_the_bridge_but_never_execute_tool() -> None:
    async def main() -> None:
        instance = HostInstance(state_dir(), tool_token=TOKEN)  # even with a token set
        await instance.start()
        try:
            await check(instance)
        finally:
            await instance.close()

    async def check(instance: HostInstance) -> None:
        async with AsyncPool(size=1, instance=instance) as pool:
            pool.register_host_tool("double", lambda x: 2 * x)
            address = await pool.instance.bridge_address()
            assert address.startswith("127.0.0.1:") and address != instance.tool_address
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.BridgeServiceStub(channel)
                assert (await stub.Ping(pb.PingRequest(message="x"), timeout=DEADLINE_S)
                        ).message == "pong: x"
                req = pb.ExecuteElixirToolRequest(tool_name="double")
                codec.encode_params(req, {"x": 4})
                resp = await stub.ExecuteElixirTool(req, timeout=DEADLINE_S)
                assert codec.decode_result(resp) == 8  # host tools: what the bridge calls
                for rpc, kind in ((stub.ExecuteTool, "unary"),
                                  (stub.ExecuteStreamingTool, "stream")):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        call = rpc(request("add", {"a": 1, "b": 2}), timeout=DEADLINE_S,
                                   metadata=(("authorization", f"Bearer {TOKEN}"),))
                        if kind == "stream":
                            [c async for c in call]
                        else:
                            await call
                    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert "unix socket" in (info.value.details() or "")
    asyncio.run(main())


def test_tcp_with_a_token_serves_execute_tool_to_calls_that_carry_it(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, f"""
        [tool_bridge]
        token = "{TOKEN}"
    """))
    with Pools(config) as pools:
        address = pools.instance.tool_address
        assert address.startswith("127.0.0.1:")
        good = (("authorization", f"Bearer {TOKEN}"),)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.BridgeServiceStub(channel)
            for metadata in (None, (("authorization", "Bearer wrong"),),
                             (("authorization", TOKEN),)):
                with pytest.raises(grpc.RpcError) as info:  # every RPC needs it there
                    stub.Ping(pb.PingRequest(), timeout=DEADLINE_S, metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as info:
                    stub.ExecuteTool(request("add", {"a": 1, "b": 2}), timeout=DEADLINE_S,
                                     metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.ExecuteStreamingTool(request("stream_count", {"n": 2}),
                                                   timeout=DEADLINE_S, metadata=metadata))
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert result(stub.ExecuteTool(request("add", {"a": 1, "b": 2}),
                                           timeout=DEADLINE_S, metadata=good), "add") == 3
            assert result(stub.ExecuteTool(request("record", {"tag": "t"}, pool="sample"),
                                           timeout=DEADLINE_S, metadata=good), "record") == 1
            assert chunks(stub.ExecuteStreamingTool(request("stream_count", {"n": 2}),
                                                    timeout=DEADLINE_S, metadata=good)) == [
                {"i": 1}, {"i": 2}]
            assert stub.Ping(pb.PingRequest(message="t"), timeout=DEADLINE_S,
                             metadata=good).message == "pong: t"
    assert pools.instance.tool_address == ""  # closed with the host


def test_registered_tool_catalogues_are_bounded_and_strangers_are_refused() -> None:
    # RegisterTools on the bridge's TCP listener is taken only from the host's own bridge
    # workers (any local user can dial it); what the host keeps stays bounded (a bridge also
    # registers again for each session, under a fresh id)
    import asyncio

    import grpc

    from runtime.config import state_dir
    from runtime.pool.host.host_bridge import MAX_REGISTERED
    from runtime.pool.host.instance import HostInstance
    from runtime.protocol import pb, pb_grpc

    async def main() -> None:
        instance = HostInstance(state_dir())
        await instance.start()
        try:
            async with grpc.aio.insecure_channel(await instance.bridge_address()) as channel:
                resp = await pb_grpc.BridgeServiceStub(channel).RegisterTools(
                    pb.RegisterToolsRequest(worker_id="stranger",
                                            tools=[pb.ToolRegistration(name="t")]), timeout=5)
            assert not resp.success and "own Snakepit bridge workers" in resp.error_message
            assert instance.registered_tools("stranger") == []
            async with grpc.aio.insecure_channel(instance.host_address) as channel:
                stub = pb_grpc.BridgeServiceStub(channel)
                for i in range(MAX_REGISTERED + 16):
                    await stub.RegisterTools(pb.RegisterToolsRequest(
                        worker_id=f"w{i}", tools=[pb.ToolRegistration(name="t")]), timeout=5)
            assert instance.registered_tools("w0") == []  # the oldest were dropped
            assert [t.name for t in instance.registered_tools(f"w{MAX_REGISTERED + 15}")] == \
                ["t"]
        finally:
            await instance.close()

    asyncio.run(main())
