"""Every showcase tool, called through a real pool of real worker processes."""

from __future__ import annotations

import os

import pytest

import runtime
from runtime import Pool


@pytest.fixture
def pool():
    with Pool(size=2, call_timeout_ms=20_000) as p:
        yield p


def test_ping_comes_from_a_worker_process(pool: Pool) -> None:
    result = pool.execute("ping")
    assert result["pong"] is True
    assert result["pid"] in pool.pids()
    assert result["pid"] != os.getpid()


def test_echo_returns_its_kwargs(pool: Pool) -> None:
    args = {"s": "text", "n": 3, "f": 1.5, "l": [1, "a", None], "d": {"k": [True]}, "z": None}
    assert pool.execute("echo", args) == args


def test_add_keeps_integers_integers(pool: Pool) -> None:
    assert pool.execute("add", {"a": 2, "b": 40}) == 42
    assert isinstance(pool.execute("add", {"a": 2, "b": 40}), int)
    assert pool.execute("add", {"a": 0.5, "b": 0.25}) == 0.75


def test_sleep_and_async_sleep(pool: Pool) -> None:
    assert pool.execute("sleep", {"ms": 20}) == {"slept_ms": 20, "cancelled": False}
    assert pool.execute("async_sleep", {"ms": 20}) == {"slept_ms": 20}


def test_cpu_burn_runs_in_the_worker(pool: Pool) -> None:
    result = pool.execute("cpu_burn", {"ms": 30})
    assert result["iterations"] > 0 and result["pid"] in pool.pids()


def test_allocate_holds_memory(pool: Pool) -> None:
    import psutil

    first = pool.execute("allocate", {"mb": 20})
    assert first["held_mb"] >= 20
    rss = max(psutil.Process(pid).memory_info().rss for pid in pool.pids())
    assert rss > 20 * 1024 * 1024


def test_stream_count_streams_items_in_order(pool: Pool) -> None:
    assert list(pool.stream("stream_count", {"n": 5})) == [{"i": i} for i in range(1, 6)]


def test_bytes_travel_raw(pool: Pool) -> None:
    data = bytes(range(256)) * 4
    assert pool.execute("bytes_echo", {"data": data}) == data
    big = os.urandom(5 * 1024 * 1024)
    assert pool.execute("bytes_echo", {"data": big}) == big


def test_session_counter_keeps_state_per_session(pool: Pool) -> None:
    a1 = pool.execute("session_counter", session_id="a")
    a2 = pool.execute("session_counter", session_id="a")
    assert (a1["count"], a2["count"]) == (1, 2) and a1["pid"] == a2["pid"]  # one worker
    b = pool.execute("session_counter", session_id="b")
    assert b["session_id"] == "b" and b["count"] == 1


def test_fail_raises_remote_error_with_traceback(pool: Pool) -> None:
    with pytest.raises(runtime.RemoteError) as info:
        pool.execute("fail", {"message": "boom"})
    err = info.value
    assert err.category == "remote_error"
    assert err.remote_type == "ValueError"
    assert "boom" in str(err)
    assert "raise ValueError(message)" in (err.remote_traceback or "")
    assert pool.execute("add", {"a": 1, "b": 1}) == 2  # the worker kept serving


def test_call_host_reaches_a_host_tool(pool: Pool) -> None:
    seen = []

    def greet(who: str) -> str:
        seen.append(who)
        return f"hi {who}"

    pool.register_host_tool("greet", greet)
    assert pool.execute("call_host", {"name": "greet", "who": "w"}) == "hi w"
    assert seen == ["w"]


def test_host_tool_errors_reach_the_caller(pool: Pool) -> None:
    def bad() -> None:
        raise KeyError("nope")

    pool.register_host_tool("bad", bad)
    with pytest.raises(runtime.RemoteError, match="host tool 'bad' failed"):
        pool.execute("call_host", {"name": "bad"})
    with pytest.raises(runtime.RemoteError, match="unknown host tool 'missing'"):
        pool.execute("call_host", {"name": "missing"})


def test_tools_lists_signatures(pool: Pool) -> None:
    tools = {t["name"]: t for t in pool.tools()}
    assert {"ping", "echo", "add", "sleep", "fail", "crash", "cpu_burn", "allocate",
            "stream_count", "bytes_echo", "session_counter", "call_host"} <= set(tools)
    add = tools["add"]["parameters"]
    assert [(p["name"], p["type"], p["required"]) for p in add] == [
        ("a", "float", True), ("b", "float", True)]
    assert tools["stream_count"]["streaming"] is True
    sc = {p["name"]: p for p in tools["stream_count"]["parameters"]}
    assert sc["delay_ms"] == {"name": "delay_ms", "type": "float", "required": False,
                              "default": 0}


def test_stats_report_each_worker(pool: Pool) -> None:
    for _ in range(4):
        pool.execute("ping")
    stats = pool.stats()
    assert stats.size == 2 and stats.ready == 2
    assert sum(w.requests for w in stats.workers) == 4
    assert all(w.state == "ready" and w.pid for w in stats.workers)
