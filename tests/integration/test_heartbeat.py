"""Host -> worker heartbeats: a worker that stops answering is dumped, killed and replaced."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import runtime
from runtime import Pool
from tests.conftest import pid_alive, wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"
FAST = {"heartbeat_interval_ms": 200, "heartbeat_timeout_ms": 300, "heartbeat_max_missed": 3}


def test_hung_worker_is_detected_dumped_and_replaced(state_dir: Path) -> None:
    with Pool(adapter=SAMPLE, size=1, **FAST) as pool:
        pid = pool.pids()[0]
        started = time.monotonic()
        with pytest.raises(runtime.WorkerHung) as info:
            pool.execute("hold_gil", {"seconds": 60})
        assert time.monotonic() - started < 10
        err = info.value
        assert err.category == "worker_hung" and "no heartbeat answer" in str(err)
        dump = Path(err.details["stack_dump"])
        assert dump.parent == state_dir / "dumps"
        assert "hold_gil" in dump.read_text()  # the Python stack of the stuck tool
        assert wait_until(lambda: not pid_alive(pid))
        assert pool.execute("record", {"tag": "x"}, timeout=10) == 1
        assert pool.stats().recycles == {"hung": 1}


def test_busy_but_answering_workers_are_left_alone() -> None:
    with Pool(size=1, **FAST) as pool:
        pid = pool.pids()[0]
        # time.sleep releases the GIL: the worker keeps answering heartbeats.
        assert pool.execute("sleep", {"ms": 1500})["slept_ms"] == 1500
        assert pool.pids() == [pid] and pool.stats().recycles == {}


def test_workers_ready_early_are_pinged_while_the_rest_start() -> None:
    # Dependent workers judge the host by its pings (1.5 s >= 3 x 0.3 s). Started one at a
    # time with 1 s of initialize() each, the first is ready ~2 s before the pool is: it must
    # be pinged meanwhile, or it takes the host for wedged and leaves.
    with Pool(adapter="tests.adapters.sample:SlowInit", size=3, start_batch=1,
              dependent_timeout_ms=1500, heartbeat_interval_ms=300,
              env={"PIT_TEST_INIT_S": "1"}) as pool:
        assert {w.host_watch for w in pool.stats().workers} == {"pings"}
        time.sleep(1.0)
        workers = pool.stats().workers
        # the three first workers, none replaced (a replacement would be worker-4), none
        # exited for want of pings
        assert not pool.stats().recycles
        assert sorted(w.id for w in workers) == ["worker-1", "worker-2", "worker-3"]


def test_idle_streams_nobody_closes_do_not_starve_pings() -> None:
    # 12 never-ending CallLane streams used to take every gRPC server thread of the worker:
    # the host's pings queued behind them and the worker, deaf to its host for
    # dependent_timeout_ms (2 s here), exited although the host was pinging it all along.
    import threading

    import grpc

    from runtime.protocol import pb, pb_grpc

    with Pool(size=1, dependent_timeout_ms=2_000, heartbeat_interval_ms=500) as pool:
        pid = pool.pids()[0]
        (sock,) = pool.instance.run_dir.glob("w*.sock")
        never = threading.Event()

        def idle() -> Any:
            never.wait()
            yield from ()

        channel = grpc.insecure_channel(f"unix:{sock}")
        stub = pb_grpc.BridgeServiceStub(channel)
        try:
            streams = [stub.CallLane(idle()) for _ in range(12)]
            # one (whichever came first) stays open; the rest are turned away at once
            assert wait_until(lambda: sum(c.done() for c in streams) == 11)
            refused = {c.code() for c in streams if c.done()}
            assert refused == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            time.sleep(3.0)  # past dependent_timeout_ms, with the first stream still open
            assert pid_alive(pid) and pool.pids() == [pid]
            assert stub.Ping(pb.PingRequest(message="x"), timeout=2).message == "pong: x"
            assert pool.execute("add", {"a": 1, "b": 2}) == 3
            assert pool.stats().recycles == {}
        finally:
            never.set()
            for call in streams:
                call.cancel()
            channel.close()
