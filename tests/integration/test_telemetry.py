"""Telemetry through real workers: adapter events reach host subscribers with the worker's id
and the call's correlation id; the pool's own events arrive as documented."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import runtime
from runtime import Pool, Pools, WorkerExit, load_config, telemetry
from tests.conftest import wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


class Recorder:
    def __init__(self, pattern: str) -> None:
        self.events: list[telemetry.Event] = []
        self.lock = threading.Lock()
        self.sub = telemetry.subscribe(pattern, self._add)

    def _add(self, event: telemetry.Event) -> None:
        with self.lock:
            self.events.append(event)

    def named(self, name: str) -> list[telemetry.Event]:
        with self.lock:
            return [e for e in self.events if e.name == name]


@pytest.fixture
def recorder():
    rec = Recorder("*")
    yield rec
    rec.sub.cancel()


def test_worker_emit_reaches_a_host_subscriber_with_worker_and_correlation_id(
        recorder: Recorder) -> None:
    with Pool(adapter=SAMPLE, size=2) as pool:
        by_pid = {w.pid: w.id for w in pool.stats().workers}
        taken = pool.execute("emit_events", {"n": 3},
                             metadata={"correlation_id": "job-42"})
        assert taken == 3
        assert wait_until(lambda: len(recorder.named("adapter.sample.tick")) == 3)
        assert wait_until(lambda: recorder.named("adapter.sample.work.span"))
    ticks = recorder.named("adapter.sample.tick")
    worker = ticks[0].metadata["worker"]
    assert worker == by_pid[int(ticks[0].metadata["pid"])]  # the pid the worker reported
    assert [e.measurements["i"] for e in ticks] == [0, 1, 2]
    assert ticks[1].measurements["ratio"] == 0.5 and ticks[1].measurements["label"] == "x"
    assert {e.metadata["correlation_id"] for e in ticks} == {"job-42"}
    assert ticks[0].metadata["tool"] == "emit_events" and ticks[0].metadata["pool"] == "default"
    [span] = recorder.named("adapter.sample.work.span")
    assert span.metadata["status"] == "ok" and span.measurements["duration_ms"] >= 0
    assert span.metadata["worker"] == worker


def test_a_full_worker_buffer_drops_and_counts_never_blocks(recorder: Recorder) -> None:
    with Pool(adapter=SAMPLE, size=1, env={"PIT_TELEMETRY_BUFFER": "4"}) as pool:
        taken = pool.execute("emit_events", {"n": 2000})

        def delivered() -> int:
            return len(recorder.named("adapter.sample.tick"))

        def dropped() -> int:
            return sum(e.measurements["dropped"] for e in recorder.named("telemetry.dropped"))

        assert wait_until(lambda: delivered() + dropped() >= 2000, timeout=10)
    # every tick is delivered or counted as dropped; the span event may be dropped too
    assert delivered() == taken and taken + dropped() in (2000, 2001)
    assert dropped() > 0
    assert recorder.named("telemetry.dropped")[0].metadata["worker"] == "worker-1"


def test_pool_events_follow_calls_workers_and_sessions(recorder: Recorder,
                                                        tmp_path: Path) -> None:
    with Pool(adapter=SAMPLE, size=1, max_requests=0, strict_results=True) as pool:
        pool.execute("renamed", {"x": 2})
        with pytest.raises(Exception):  # noqa: B017 - the tool's own error
            pool.execute("unserializable")
        with pool.session() as s:
            s.execute("record", {"tag": "a"})
        pid = pool.pids()[0]
        with pytest.raises(WorkerExit):
            pool.execute("crash_once", {"marker": str(tmp_path / "crashed")})
        assert wait_until(lambda: recorder.named("worker.crashed"))
        assert wait_until(lambda: len(recorder.named("worker.ready")) == 2, timeout=10)
    names = [e.name for e in recorder.events]
    assert names.index("worker.started") < names.index("worker.ready") < names.index(
        "pool.started")
    done = recorder.named("pool.call.completed")
    assert [(e.metadata["tool"], e.metadata["status"]) for e in done[:2]] == [
        ("renamed", "ok"), ("unserializable", "error")]
    assert done[0].measurements["duration_ms"] > 0
    assert len(recorder.named("pool.call.dispatched")) == len(done) == 4
    [crash] = recorder.named("worker.crashed")
    assert crash.metadata["pid"] == pid and crash.metadata["cause"] == "exit"
    assert [e.name for e in recorder.events if e.name.startswith("session.")] == [
        "session.created", "session.closed"]
    assert names[-1] == "pool.stopped"


def test_saturation_and_drain_events(recorder: Recorder) -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        futures = [pool.submit("block", {"seconds": 0.05}) for _ in range(4)]
        for f in futures:
            f.result()
    [sat] = recorder.named("pool.saturated")
    assert sat.measurements["capacity"] == 1
    [drained] = recorder.named("pool.drained")
    assert drained.measurements["saturated_ms"] >= 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_exporter_serves_pool_metrics_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "pit.toml").write_text(
        f"[telemetry]\nprometheus_port = {port}\n[pools.p]\nsize = 1\n")
    pools = Pools(load_config(tmp_path / "pit.toml"))
    try:
        pools.start()
        for i in range(7):
            pools["p"].execute("add", {"a": i, "b": 1})
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        pools.close()
    text = body.decode()
    assert 'pit_pool_calls_total{pool="p"} 7.0' in text
    assert 'pit_pool_workers{pool="p",state="ready"} 1.0' in text
    with pytest.raises(OSError):  # closed with the pools
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    time.sleep(0)


def test_prometheus_counts_the_streams_run(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "pit.toml").write_text(
        f'[telemetry]\nprometheus_port = {port}\n[pools.p]\nadapter = "{SAMPLE}"\n'
        "size = 1\n")
    with Pools(load_config(tmp_path / "pit.toml")) as pools:
        for _ in range(5):
            assert list(pools["p"].stream("make_chunks", {"count": 2, "n": 3})) == [b"xxx"] * 2
        with pytest.raises(runtime.RemoteError):
            list(pools["p"].stream("broken_stream", {"n": 1}))
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=5).read().decode()
    for line in ('pit_pool_streams_total{pool="p"} 6.0',
                 'pit_pool_streams_started_total{pool="p"} 6.0',
                 'pit_pool_streams_failed_total{pool="p"} 1.0',
                 'pit_pool_stream_chunks_total{pool="p"} 11.0',
                 'pit_pool_circuit_open{pool="p"} 0.0'):
        assert line in text, line


def test_every_handler_runs_on_the_pools_loop_thread() -> None:
    # Direct calls (a blocking execute on a lent worker) used to emit their pool.call.* events
    # on the caller's thread, and write the pool's counters from there.
    threads: dict[str, set[str]] = {}
    lock = threading.Lock()

    def note(event: telemetry.Event) -> None:
        with lock:
            threads.setdefault(event.name, set()).add(threading.current_thread().name)

    sub = telemetry.subscribe("*", note)
    try:
        with Pool(size=2, max_requests=7) as pool:
            lent = False
            for i in range(20):
                assert pool.execute("add", {"a": i, "b": 1}) == i + 1
                lent = lent or any(w.lent for w in pool.stats().workers)
            assert lent  # the calls above went direct, and counted for max_requests:
            assert wait_until(lambda: pool.stats().recycles.get("requests", 0) >= 1)
            with pytest.raises(runtime.RemoteError):
                pool.execute("fail")
            futures = [pool.submit("add", {"a": i, "b": 1}) for i in range(20)]
            assert [f.result() for f in futures] == [i + 1 for i in range(20)]
        assert {"pool.call.dispatched", "pool.call.completed"} <= set(threads), threads
        loops = set().union(*threads.values())
        assert loops == {"pit-loop"}, threads
    finally:
        sub.cancel()


def test_a_direct_call_after_an_idle_spell_is_reported_without_a_snapshot() -> None:
    # An idle pool stops settling direct calls on a timer; the next call's report must wake
    # the loop itself, or its events would wait for whatever woke the loop next.
    completed = threading.Event()
    sub = telemetry.subscribe("pool.call.completed", lambda _event: completed.set())
    try:
        with Pool(size=1) as pool:
            for _ in range(3):
                pool.execute("ping")
            assert any(w.lent for w in pool.stats().workers)
            time.sleep(1.5)  # past 20 ticks with nothing to settle
            completed.clear()
            pool.execute("ping")
            assert completed.wait(1.0)
    finally:
        sub.cancel()
