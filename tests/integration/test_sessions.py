"""Sessions and affinity, against real workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import runtime
from runtime import Pool
from tests.conftest import wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


def busy_pinned(pool: Pool, s) -> tuple[int, object]:  # noqa: ANN001
    """Pin session ``s`` to a worker and keep that worker busy for 600 ms."""
    pid = s.execute("remember", {"item": "a"})["pid"]
    fut = s.submit("spin", {"seconds": 0.6})
    time.sleep(0.1)
    return pid, fut


def test_a_session_keeps_its_state_in_one_worker(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "ended"
    monkeypatch.setenv("PIT_TEST_SESSION_LOG", str(log))
    with Pool(adapter=SAMPLE, size=2) as pool:
        with pool.session() as s:
            results = [s.execute("remember", {"item": str(i)}) for i in range(5)]
            assert results[-1]["items"] == ["0", "1", "2", "3", "4"]
            assert len({r["pid"] for r in results}) == 1
            assert pool.stats().sessions == 1
        assert pool.stats().sessions == 0
        assert log.read_text() == f"{s.id}:0,1,2,3,4\n"  # on_session_end ran in the worker
        # plain execute(session_id=...) opens and uses a session too
        assert pool.execute("remember", {"item": "x"}, session_id="plain")["items"] == ["x"]
        assert pool.execute("remember", {"item": "y"}, session_id="plain")["items"] == ["x", "y"]


def test_idle_sessions_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "ended"
    monkeypatch.setenv("PIT_TEST_SESSION_LOG", str(log))
    with Pool(adapter=SAMPLE, size=1) as pool:
        s = pool.session(ttl_s=0.5)
        s.execute("remember", {"item": "soon-gone"})
        assert wait_until(lambda: log.exists() and "soon-gone" in log.read_text(), timeout=5)
        assert pool.stats().sessions == 0


def test_session_quota_is_an_error() -> None:
    with Pool(size=1, max_sessions=2) as pool:
        pool.session("a")
        pool.session("b")
        with pytest.raises(runtime.SessionQuota, match="max_sessions"):
            pool.session("c")
        with pytest.raises(runtime.SessionQuota):
            pool.execute("ping", session_id="d")
        assert pool.execute("ping", session_id="a")["pong"] is True


def test_hint_falls_back_to_another_worker_when_the_pinned_one_is_busy() -> None:
    with Pool(adapter=SAMPLE, size=2) as pool:
        s = pool.session(affinity="hint")
        pid, fut = busy_pinned(pool, s)
        other = s.execute("remember", {"item": "b"})
        assert other["pid"] != pid and other["items"] == ["b"]
        fut.result()
        assert s.execute("remember", {"item": "c"})["pid"] == pid  # still pinned


def test_strict_fail_fast_reports_a_busy_worker() -> None:
    with Pool(adapter=SAMPLE, size=2) as pool:
        s = pool.session(affinity="strict_fail_fast")
        pid, fut = busy_pinned(pool, s)
        with pytest.raises(runtime.WorkerBusy, match="busy"):
            s.execute("remember", {"item": "b"})
        fut.result()
        assert s.execute("remember", {"item": "c"})["items"] == ["a", "c"]


def test_strict_queue_waits_for_the_pinned_worker() -> None:
    with Pool(adapter=SAMPLE, size=2) as pool:
        s = pool.session(affinity="strict_queue")
        pid, fut = busy_pinned(pool, s)
        started = time.monotonic()
        result = s.execute("remember", {"item": "b"})
        assert result == {"items": ["a", "b"], "pid": pid}
        assert time.monotonic() - started > 0.3  # it waited for the spin to end
        fut.result()
        pid2, fut2 = busy_pinned(pool, s)
        with pytest.raises(runtime.CallTimeout, match="strict_queue"):
            s.execute("remember", {"item": "c"}, timeout=0.2)
        fut2.result()


@pytest.mark.parametrize("how, reason", [("kill", "crashed"), ("recycle", "recycled")])
def test_strict_sessions_report_a_lost_worker_and_hint_sessions_move(how: str,
                                                                      reason: str) -> None:
    with Pool(adapter=SAMPLE, size=2) as pool:
        strict = pool.session(affinity="strict_queue")
        hint = pool.session(affinity="hint")
        pid = strict.execute("remember", {"item": "a"})["pid"]
        while hint.execute("remember", {"item": "a"})["pid"] != pid:
            hint.close()
            hint = pool.session(affinity="hint")
        worker = next(w.id for w in pool.stats().workers if w.pid == pid)
        if how == "kill":
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda: pid not in pool.pids())
        else:
            pool.recycle(worker)
        with pytest.raises(runtime.SessionWorkerUnavailable, match=reason) as info:
            strict.execute("remember", {"item": "b"}, timeout=10)
        assert info.value.category == "session_worker_unavailable"
        moved = hint.execute("remember", {"item": "b"}, timeout=10)
        assert moved["pid"] != pid and moved["items"] == ["b"]  # re-pinned, fresh state


def test_the_deadline_is_one_budget_across_queue_and_worker() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        busy = pool.submit("spin", {"seconds": 0.4})
        time.sleep(0.02)
        left = pool.execute("remaining_ms", timeout=0.5)
        # ~380 ms of the 500 went to the queue (a budget started afresh would leave ~500)
        assert left is not None and left <= 125
        busy.result()
        busy = pool.submit("spin", {"seconds": 0.4})
        time.sleep(0.02)
        started = time.monotonic()
        with pytest.raises(runtime.CallTimeout):
            pool.execute("block", {"seconds": 0.3}, timeout=0.5)
        assert 0.4 < time.monotonic() - started < 0.8
        busy.result()


@pytest.mark.parametrize("options", [{}, {"direct_calls": False}, {"call_lane": False}])
def test_the_tool_is_told_a_deadline_that_leaves_snakepits_margins(options: dict) -> None:
    # 1 s for the tool to finish and 200 ms for its answer to travel, before the host's own
    # deadline passes (direct calls, the loop's lane, unary RPCs alike)
    with Pool(adapter=SAMPLE, size=1, **options) as pool:
        pool.execute("remaining_ms")
        left = pool.execute("remaining_ms", timeout=10)
        # (gRPC carries a unary call's deadline with a few ms of slack)
        assert left is not None and 8_000 < left <= 8_850
        assert pool.execute("remaining_ms", timeout=0.8) > 500  # short: all of it


def test_a_call_waiting_in_the_worker_behind_another_keeps_one_budget() -> None:
    # sent at once, the second call is prefetched to the busy worker (it waits there, not in
    # the host's queue): its budget must still count from the caller's deadline
    with Pool(adapter=SAMPLE, size=1) as pool:
        busy = pool.submit("spin", {"seconds": 0.4})
        left = pool.execute("remaining_ms", timeout=0.5)
        assert left is not None and left <= 110
        busy.result()
