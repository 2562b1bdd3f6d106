"""`runtime.execute()` / `runtime.stream()` with several pools (as under `pit run`), and the
host's ExecuteTool for a client that names no pool: the config's default_pool, else the only
pool whose workers have the tool; otherwise an error naming the pools that have it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import runtime
from runtime.config import load_config
from runtime.pool.current import set_current_pools
from runtime.pool.sync_pool import Pools
from runtime.protocol import codec, pb, pb_grpc

SHOWCASE_AND_SAMPLE = """
[pools.show]
size = 1
[pools.sample]
adapter = "tests.adapters.sample:SampleAdapter"
size = 1
"""


@contextlib.contextmanager
def current(tmp_path: Path, text: str) -> Iterator[Pools]:
    (tmp_path / "pit.toml").write_text(text)
    with Pools(load_config(tmp_path / "pit.toml")) as pools:
        set_current_pools(pools)
        try:
            yield pools
        finally:
            set_current_pools(None)


@pytest.fixture
def two_pools(tmp_path: Path) -> Iterator[Pools]:
    with current(tmp_path, SHOWCASE_AND_SAMPLE) as pools:
        yield pools


def test_a_call_goes_to_the_only_pool_that_has_the_tool(two_pools: Pools) -> None:
    assert runtime.execute("add", {"a": 1, "b": 2}) == 3  # the showcase's
    assert runtime.execute("record", {"tag": "x"}) == 1  # the sample adapter's
    assert list(runtime.stream("stream_count", {"n": 2})) == [{"i": 1}, {"i": 2}]
    assert two_pools.default("record") is two_pools["sample"]


def test_a_tool_no_pool_has_is_named_with_the_pools(two_pools: Pools) -> None:
    with pytest.raises(runtime.ToolNotFound, match=r"no pool has a tool 'nope'; pools: show, "
                                                   "sample"):
        runtime.execute("nope")


def test_a_tool_of_several_pools_names_them_and_default_pool_picks(tmp_path: Path) -> None:
    both = SHOWCASE_AND_SAMPLE + "[pools.show2]\nsize = 1\n"
    with current(tmp_path, both):
        with pytest.raises(runtime.PoolNotFound, match=r"tool 'add' is in several pools "
                                                       r"\(show, show2\)") as caught:
            runtime.execute("add", {"a": 1, "b": 2})
        assert caught.value.hint and "default_pool" in caught.value.hint
        assert runtime.execute("add", {"a": 1, "b": 2}, pool="show2") == 3
    with current(tmp_path, 'default_pool = "show2"\n' + both) as pools:
        assert pools.default("add") is pools["show2"]
        assert pools.default("record") is pools["show2"]  # default_pool wins, tool or not
        assert runtime.execute("add", {"a": 1, "b": 2}) == 3


def test_the_hosts_execute_tool_chooses_as_execute_does(tmp_path: Path) -> None:
    both = 'default_pool = "show2"\n' + SHOWCASE_AND_SAMPLE + "[pools.show2]\nsize = 1\n"
    with current(tmp_path, both) as pools, grpc.insecure_channel(
            pools.instance.host_address) as channel:
        stub = pb_grpc.BridgeServiceStub(channel)
        resp = stub.ExecuteTool(pb.ExecuteToolRequest(tool_name="ping"), timeout=30)
        assert resp.success, resp.error_message
        assert codec.decode_result(resp)["pid"] in pools["show2"].pids()
