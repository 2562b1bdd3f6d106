"""Host -> worker heartbeats: a worker that stops answering is dumped, killed and replaced."""

from __future__ import annotations

import time
from pathlib import Path

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
