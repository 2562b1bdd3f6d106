"""Timeouts, queueing, bad input and crashes, against real workers."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import runtime
from runtime import Pool
from tests.conftest import pid_alive, wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


def test_unknown_tool_lists_the_available_ones() -> None:
    with Pool(size=1) as pool:
        with pytest.raises(runtime.ToolNotFound) as info:
            pool.execute("nope")
        assert "available tools:" in str(info.value) and "ping" in str(info.value)


@pytest.mark.parametrize("args, fragment", [
    ({"a": 1}, "missing required parameter 'b'"),
    ({"a": 1, "b": 2, "c": 3}, "unknown parameter 'c'"),
    ({"a": "x", "b": 2}, "parameter 'a' must be float, got str"),
    ({"a": True, "b": 2}, "parameter 'a' must be float, got bool"),
])
def test_bad_arguments_name_the_parameter(args: dict, fragment: str) -> None:
    with Pool(size=1) as pool:
        with pytest.raises(runtime.InvalidArgument, match=fragment):
            pool.execute("add", args)
        assert pool.execute("add", {"a": 1, "b": 2}) == 3  # nothing crashed


def test_unencodable_argument_fails_before_dispatch() -> None:
    with Pool(size=1) as pool:
        with pytest.raises(runtime.InvalidArgument, match="parameter 'x' is not JSON"):
            pool.execute("echo", {"x": {1, 2}})
        with pytest.raises(TypeError, match="args must be a mapping"):
            pool.execute("echo", [1, 2])  # type: ignore[arg-type]


def test_unserializable_result_and_sys_exit_do_not_kill_the_worker() -> None:
    with Pool(adapter=SAMPLE, size=1, strict_results=True) as pool:
        pid = pool.pids()[0]
        with pytest.raises(runtime.ResultError, match="cannot be encoded"):
            pool.execute("unserializable")
        with pytest.raises(runtime.RemoteError, match=r"sys.exit\(4\)"):
            pool.execute("exit_now")
        assert pool.execute("record", {"tag": "x"}) == 1
        assert pool.pids() == [pid]


def test_pickle_needs_the_pool_to_opt_in() -> None:
    with Pool(size=1) as pool:
        with pytest.raises(runtime.InvalidArgument, match="allow_pickle"):
            pool.execute("echo", {"x": runtime.Pickled({1, 2})})
    with Pool(size=1, allow_pickle=True) as pool:
        assert pool.execute("bytes_echo", {"data": runtime.Pickled(b"ab")}) == b"ab"


def test_a_running_call_cancelled_by_pool_cancel_raises_cancelled_error() -> None:
    """`Pool.cancel` of a call already out: cancelled in its worker, and its future ends
    (it delivered nothing, and `result()` waited for ever); the worker takes calls again."""
    import concurrent.futures

    with Pool(size=1) as pool:
        pid = pool.pids()[0]
        fut = pool.submit("sleep", {"ms": 30_000})
        assert wait_until(lambda: fut.running(), timeout=10)
        time.sleep(0.2)  # out on the worker
        pool.cancel(fut)
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result(timeout=10)
        assert pool.execute("ping", timeout=5.0)["pid"] == pid


@pytest.mark.parametrize("lane_socket", [True, False], ids=["socket-lane", "grpc-lane"])
def test_call_timeout_cancels_the_call_in_the_worker(lane_socket: bool) -> None:
    with Pool(size=1, lane_socket=lane_socket) as pool:
        assert pool.stats().workers[0].lane == ("socket" if lane_socket else "grpc")
        pid = pool.pids()[0]
        started = time.monotonic()
        with pytest.raises(runtime.CallTimeout) as info:
            pool.execute("sleep", {"ms": 10_000}, timeout=0.3)
        assert time.monotonic() - started < 2.0
        assert info.value.category == "timeout"
        # The cooperative sleep woke on cancellation: the same worker is free again at once.
        assert pool.execute("ping", timeout=2.0)["pid"] == pid


@pytest.mark.parametrize("lane_socket", [True, False], ids=["socket-lane", "grpc-lane"])
def test_timeout_interrupts_python_code_that_ignores_cancellation(lane_socket: bool) -> None:
    with Pool(adapter=SAMPLE, size=1, lane_socket=lane_socket) as pool:
        pid = pool.pids()[0]
        with pytest.raises(runtime.CallTimeout):
            pool.execute("spin", {"seconds": 30}, timeout=0.3)
        assert pool.execute("record", {"tag": "after"}, timeout=3.0) == 1
        assert pool.pids() == [pid]


@pytest.mark.parametrize("lane_socket", [True, False], ids=["socket-lane", "grpc-lane"])
def test_a_call_stuck_in_c_gets_its_worker_replaced(lane_socket: bool) -> None:
    with Pool(adapter=SAMPLE, size=1, lane_socket=lane_socket) as pool:
        pid = pool.pids()[0]
        with pytest.raises(runtime.CallTimeout):
            pool.execute("block", {"seconds": 60}, timeout=0.3)
        # CANCEL_GRACE_S later the stuck worker is killed and a new one serves.
        assert pool.execute("record", {"tag": "x"}, timeout=10.0) == 1
        assert wait_until(lambda: not pid_alive(pid))
        assert pool.pids() != [pid]


def test_queue_saturation_fails_at_once() -> None:
    with Pool(size=1, max_queue=1, queue_timeout_ms=5_000) as pool:
        busy = pool.submit("sleep", {"ms": 1_000})
        time.sleep(0.1)
        queued = pool.submit("ping")
        started = time.monotonic()
        with pytest.raises(runtime.PoolSaturated, match="saturated"):
            pool.execute("ping")
        assert time.monotonic() - started < 0.5
        assert busy.result()["slept_ms"] == 1_000
        assert queued.result()["pong"] is True


def test_queue_timeout_is_delivered_once_and_the_call_never_runs() -> None:
    with Pool(adapter=SAMPLE, size=1, queue_timeout_ms=200) as pool:
        busy = pool.submit("spin", {"seconds": 0.8})
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(runtime.QueueTimeout) as info:
            pool.execute("record", {"tag": "late"})
        waited = time.monotonic() - started
        assert 0.15 < waited < 0.7
        assert info.value.category == "queue_timeout"
        busy.result()
        time.sleep(0.2)
        assert pool.execute("get_history") == []


def test_call_timeout_while_queued_is_a_timeout() -> None:
    with Pool(size=1, queue_timeout_ms=10_000) as pool:
        busy = pool.submit("sleep", {"ms": 800})
        time.sleep(0.1)
        with pytest.raises(runtime.CallTimeout, match="while queued"):
            pool.execute("ping", timeout=0.2)
        busy.result()


def test_queued_calls_run_in_fifo_order() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        busy = pool.submit("spin", {"seconds": 0.3})
        time.sleep(0.05)
        futures = []
        for i in range(5):
            futures.append(pool.submit("record", {"tag": str(i)}))
            time.sleep(0.01)
        busy.result()
        assert [f.result() for f in futures] == [1, 2, 3, 4, 5]
        assert pool.execute("get_history") == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("lane_socket", [True, False], ids=["socket-lane", "grpc-lane"])
def test_crash_fails_only_that_call_and_the_pool_recovers(lane_socket: bool) -> None:
    with Pool(size=2, lane_socket=lane_socket) as pool:
        other = pool.submit("sleep", {"ms": 600})
        time.sleep(0.1)
        with pytest.raises(runtime.WorkerExit, match="exited with code 7") as info:
            pool.execute("crash", {"code": 7})
        assert info.value.category == "worker_exit"
        assert other.result()["slept_ms"] == 600  # the innocent worker finished its call
        assert wait_until(lambda: pool.stats().ready == 2)
        assert pool.stats().restarts == 1
        assert len({pool.execute("ping")["pid"] for _ in range(10)}) >= 1


@pytest.mark.parametrize("lane_socket", [True, False], ids=["socket-lane", "grpc-lane"])
def test_killed_worker_names_the_signal(lane_socket: bool) -> None:
    with Pool(size=1, lane_socket=lane_socket) as pool:
        pid = pool.pids()[0]
        fut = pool.submit("sleep", {"ms": 5_000})
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(runtime.WorkerExit, match="killed by SIGKILL"):
            fut.result(timeout=5)
        assert pool.execute("ping", timeout=10)["pid"] != pid


def test_worker_that_fails_to_initialize_reports_its_output() -> None:
    with pytest.raises(runtime.WorkerStartError) as info:
        Pool(adapter="tests.adapters.sample:FailingInit", size=1).start()
    assert "model weights missing" in str(info.value)
    assert "health-check" in (info.value.hint or "")


def test_adapter_that_does_not_import_is_named() -> None:
    with pytest.raises(runtime.WorkerStartError, match="No module named 'no_such_module'"):
        Pool(adapter="no_such_module:Thing", size=1).start()


def test_many_threads_share_one_pool() -> None:
    with Pool(size=2) as pool:
        results: list[int] = []
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(50):
                    results.append(pool.execute("add", {"a": n, "b": i}) - n - i)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and results == [0] * 400


@pytest.mark.parametrize("lane_socket", [True, False], ids=["socket-lane", "grpc-lane"])
def test_oversized_payloads_fail_the_call_not_the_worker(lane_socket: bool) -> None:
    with Pool(adapter=SAMPLE, size=1, max_message_mb=2, lane_socket=lane_socket) as pool:
        pid = pool.pids()[0]
        with pytest.raises(runtime.InvalidArgument, match="over the pool's limit of 2 MiB"):
            pool.execute("record", {"tag": "x" * (3 * 1024 * 1024)})
        # Results and stream chunks over the limit: the worker answers with an error
        # instead of breaking its call lane.
        with pytest.raises(runtime.ResultTooLarge, match="message limit"):
            pool.execute("make_bytes", {"n": 3 * 1024 * 1024})
        with pytest.raises(runtime.ResultTooLarge,
                           match=r"a stream chunk of 'make_chunks' is 3\.0 MiB, over the 2 MiB"):
            list(pool.stream("make_chunks", {"count": 2, "n": 3 * 1024 * 1024}))
        assert pool.execute("make_bytes", {"n": 1024 * 1024}) == b"x" * (1024 * 1024)
        assert pool.execute("get_history") == []
        assert pool.pids() == [pid]


# The ways a blocking execute() reaches a worker (README "Performance"): each must report a
# result that cannot come back the same way.
CALL_PATHS = {
    "direct": {},
    "socket-lane": {"direct_calls": False},
    "grpc-lane": {"direct_calls": False, "lane_socket": False},
    "unary": {"direct_calls": False, "call_lane": False},
}


@pytest.mark.parametrize("path", list(CALL_PATHS))
def test_a_result_that_cannot_come_back_is_named_as_the_result(path: str) -> None:
    with Pool(adapter=SAMPLE, size=1, max_message_mb=2, strict_results=True,
              **CALL_PATHS[path]) as pool:
        pid = pool.pids()[0]

        def on_this_path() -> bool:
            lent = any(w.lent for w in pool.stats().workers)
            return lent if path == "direct" else not lent

        pool.execute("record", {"tag": "x"})  # after a call through the loop: lent
        assert wait_until(on_this_path, timeout=2)
        # Not "tool 'unserializable' raised CodecError": the tool did not fail, its value did.
        with pytest.raises(runtime.ResultError) as info:
            pool.execute("unserializable")
        err = info.value
        assert type(err) is runtime.ResultError and err.category == "result_error"
        assert str(err).startswith("tool 'unserializable' returned a value that cannot be "
                                   "encoded: set is not JSON; return JSON types")
        assert "runtime.Pickled" in str(err) and "allow_pickle" in str(err)
        # Not InvalidArgument: the caller's arguments were fine, the result was too big.
        assert on_this_path()
        with pytest.raises(runtime.ResultTooLarge) as too_big:
            pool.execute("make_bytes", {"n": 3 * 1024 * 1024})
        assert too_big.value.category == "result_too_large"
        assert str(too_big.value).startswith(
            "the result of 'make_bytes' is 3.0 MiB, over the 2 MiB message limit "
            "(max_message_mb)")
        [item] = pool.map("unserializable", [{}], return_exceptions=True)
        assert type(item) is runtime.ResultError and "set is not JSON" in str(item)
        assert pool.execute("get_history") == ["x"] and pool.pids() == [pid]
