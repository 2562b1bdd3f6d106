"""Crashes cost one call: classification, requeue of calls that never ran, retries of
idempotent calls, poison-call quarantine, circuit breaker, and a chaos run."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import runtime
from runtime import Pool, telemetry
from tests.conftest import pid_alive, wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


def test_crash_causes_are_named_with_the_output_tail() -> None:
    with Pool(adapter=SAMPLE, size=1) as pool:
        with pytest.raises(runtime.WorkerExit) as info:
            pool.execute("segfault")
        err = info.value
        assert "SIGSEGV (-11): segfault" in str(err)
        assert err.details["cause"] == "segfault" and err.details["culprit"] is True
        assert "about to read address 0" in err.details["output_tail"]
        with pytest.raises(runtime.WorkerExit, match=r"SIGABRT \(-6\): abort"):
            pool.execute("abort_now", timeout=15)


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_segfault_names_the_crashing_python_line(start_method: str) -> None:
    with Pool(adapter=SAMPLE, size=1, start_method=start_method) as pool:
        with pytest.raises(runtime.WorkerExit) as info:
            pool.execute("segfault")
        assert (pool.stats().forkserver_pid is not None) == (start_method == "forkserver")
    tail = info.value.details["output_tail"]
    assert "Fatal Python error: Segmentation fault" in tail  # faulthandler, in the worker
    assert "sample.py" in tail and "in segfault" in tail     # the tool's own frame


def test_calls_queued_behind_a_crash_run_elsewhere() -> None:
    with Pool(size=1) as pool:
        for _ in range(60):  # tiny calls: the worker gets pipelined
            pool.execute("ping")
        before = [pool.submit("add", {"a": i, "b": 0}) for i in range(5)]
        crash = pool.submit("crash", {"code": 3})
        after = [pool.submit("add", {"a": i, "b": 0}) for i in range(20)]
        with pytest.raises(runtime.WorkerExit) as info:
            crash.result(timeout=30)
        assert info.value.details["cause"] == "exit"
        assert [f.result(timeout=30) for f in before] == list(range(5))
        assert [f.result(timeout=30) for f in after] == list(range(20))  # none was lost


def test_idempotent_calls_are_retried_on_another_worker(tmp_path: Path) -> None:
    with Pool(adapter=SAMPLE, size=2) as pool:
        marker = tmp_path / "once"
        assert pool.execute("crash_once", {"marker": str(marker)}, idempotent=True) == \
            "survived"
        marker2 = tmp_path / "twice"
        with pytest.raises(runtime.WorkerExit):
            pool.execute("crash_once", {"marker": str(marker2)})  # not idempotent


def test_a_call_that_keeps_killing_workers_is_quarantined() -> None:
    with Pool(size=2, poison_after=2, max_retries=5, circuit_threshold=100) as pool:
        with pytest.raises(runtime.PoisonCall, match="cost 2 workers"):
            pool.execute("crash", {"code": 9}, idempotent=True, timeout=30)
        started = time.monotonic()
        with pytest.raises(runtime.PoisonCall):
            pool.execute("crash", {"code": 9})
        assert time.monotonic() - started < 0.5  # refused without touching a worker
        with pytest.raises(runtime.WorkerExit):  # other arguments: not quarantined
            pool.execute("crash", {"code": 8}, timeout=30)
        assert wait_until(lambda: pool.stats().ready == 2, timeout=15)


@pytest.mark.parametrize("how", ["stream", "unary"])
def test_streams_and_unary_calls_that_kill_workers_are_quarantined_too(how: str) -> None:
    # They got a bare WorkerExit (no cause, no output tail, no blame): poison_after never
    # counted them.
    options = {"call_lane": False} if how == "unary" else {}
    events: list[telemetry.Event] = []
    with telemetry.subscribe("pool.call.poisoned", events.append), \
            Pool(size=2, poison_after=2, circuit_threshold=100, **options) as pool:
        def call() -> None:
            if how == "stream":
                list(pool.stream("crash", {"code": 7}))
            else:
                pool.execute("crash", {"code": 7})

        with pytest.raises(runtime.WorkerExit) as info:
            call()
        assert info.value.details["cause"] == "exit" and info.value.details["culprit"]
        assert wait_until(lambda: pool.stats().ready == 2, timeout=15)
        with pytest.raises(runtime.PoisonCall):  # it crashed a second worker: poisoned now
            call()
        assert wait_until(lambda: pool.stats().ready == 2, timeout=15)
        pids = pool.pids()
        with pytest.raises(runtime.PoisonCall):  # refused without running
            call()
        assert pool.pids() == pids
    [poisoned] = [e for e in events if e.name == "pool.call.poisoned"]  # once, not per refusal
    assert poisoned.metadata == {"pool": "default", "tool": "crash"}
    assert poisoned.measurements == {"crashes": 2}


def test_a_call_stuck_in_c_past_its_timeout_is_quarantined() -> None:
    # `block` sleeps in C: the cancel cannot stop it, so each timed-out call costs a worker
    # (killed after the cancel grace). That is the call's doing: it counts for poison_after.
    with Pool(adapter=SAMPLE, size=2, poison_after=2, circuit_threshold=100) as pool:
        for n in (1, 2):
            with pytest.raises(runtime.CallTimeout):
                pool.execute("block", {"seconds": 1e9}, timeout=0.5)
            assert wait_until(lambda n=n: pool.stats().recycles.get("cancel_timeout") == n
                              and pool.stats().ready == 2, timeout=15)
        pids = pool.pids()
        with pytest.raises(runtime.PoisonCall, match="cost 2 workers"):
            pool.execute("block", {"seconds": 1e9}, timeout=0.5)
        assert pool.execute("block", {"seconds": 0.01}) == "woke"  # other arguments run
        time.sleep(0.5)
        assert pool.pids() == pids and pool.stats().recycles == {"cancel_timeout": 2}


def test_calls_stuck_in_c_count_towards_the_circuit() -> None:
    with Pool(adapter=SAMPLE, size=2, circuit_threshold=1, poison_after=100) as pool:
        for n in (1, 2):
            with pytest.raises(runtime.CallTimeout):
                pool.execute("block", {"seconds": 1e9 + n}, timeout=0.5)
            assert wait_until(lambda n=n: pool.stats().recycles.get("cancel_timeout") == n,
                              timeout=15)
        with pytest.raises(runtime.CircuitOpen, match="cancel_timeout, cancel_timeout"):
            pool.execute("block", {"seconds": 0.01})


def test_crash_storm_opens_the_circuit_then_it_closes() -> None:
    events: list[telemetry.Event] = []
    with telemetry.subscribe("pool.circuit.*", events.append), \
            Pool(size=2, circuit_threshold=2, circuit_reset_s=1.0, poison_after=100) as pool:
        for code in (11, 12, 13):
            with pytest.raises(runtime.WorkerExit):
                pool.execute("crash", {"code": code}, timeout=30)
        with pytest.raises(runtime.CircuitOpen, match="recent causes: exit, exit, exit"):
            pool.execute("ping")
        assert pool.stats().circuit == "open"
        time.sleep(1.1)
        assert wait_until(lambda: pool.stats().ready == 2, timeout=15)
        assert pool.execute("ping", timeout=10)["pong"] is True  # half-open trial succeeds
        assert pool.execute("ping")["pong"] is True  # closed again
    assert [e.name for e in events] == ["pool.circuit.opened", "pool.circuit.half_open",
                                        "pool.circuit.closed"]
    opened, half_open, closed = events
    assert opened.metadata == {"pool": "default", "causes": "exit,exit,exit", "from": "closed"}
    assert opened.measurements["failures"] == 3
    assert half_open.measurements["open_s"] >= 1.0
    assert closed.metadata["reason"] == "trial_succeeded"


def test_reset_circuit_closes_it_by_hand() -> None:
    events: list[telemetry.Event] = []
    with telemetry.subscribe("pool.circuit.*", events.append), \
            Pool(size=2, circuit_threshold=1, circuit_reset_s=3600, poison_after=100) as pool:
        for code in (21, 22):
            with pytest.raises(runtime.WorkerExit):
                pool.execute("crash", {"code": code}, timeout=30)
        with pytest.raises(runtime.CircuitOpen):
            pool.execute("ping")
        assert pool.reset_circuit() is True
        assert pool.stats().circuit == "closed"
        assert wait_until(lambda: pool.stats().ready == 2, timeout=15)
        assert pool.execute("ping")["pong"] is True  # at once, not after circuit_reset_s
        assert pool.reset_circuit() is False
    assert [(e.name, e.metadata.get("reason")) for e in events] == [
        ("pool.circuit.opened", None), ("pool.circuit.closed", "manual")]


def test_chaos_random_sigkills_under_load() -> None:
    """4 workers, thousands of calls, a random worker SIGKILLed every 200 ms for 10 s."""
    with Pool(size=4, call_timeout_ms=30_000) as pool:
        first = set(pool.pids())
        stop = threading.Event()
        kills: list[int] = []
        seen: set[int] = set(first)

        def killer() -> None:
            rng = random.Random(7)
            start = time.monotonic()
            for n in range(1, 51):  # on a fixed schedule, so late wake-ups do not add up
                time.sleep(max(0.0, start + 0.2 * n - time.monotonic()))
                pids = pool.pids()
                seen.update(pids)
                if pids:
                    victim = rng.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)
                    except ProcessLookupError:
                        pass
            stop.set()

        results = {"ok": 0, "worker_exit": 0, "idempotent_failed": [], "other": []}
        lock = threading.Lock()

        def client(n: int) -> None:
            i = 0
            while not stop.is_set() or i < 300:
                idempotent = i % 2 == 0
                try:
                    assert pool.execute("add", {"a": n, "b": i}, idempotent=idempotent) == n + i
                    with lock:
                        results["ok"] += 1
                except runtime.WorkerExit as exc:
                    with lock:
                        if idempotent:
                            results["idempotent_failed"].append(exc)
                        else:
                            results["worker_exit"] += 1
                except BaseException as exc:  # noqa: BLE001
                    with lock:
                        results["other"].append(exc)
                i += 1

        threads = [threading.Thread(target=killer)] + [
            threading.Thread(target=client, args=(n,)) for n in range(4)]
        switch = sys.getswitchinterval()
        sys.setswitchinterval(0.001)  # four busy clients must not starve the killer
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        finally:
            sys.setswitchinterval(switch)
        assert not any(t.is_alive() for t in threads), "a call hung"
        total = results["ok"] + results["worker_exit"]
        assert total >= 2000 and len(kills) >= 40
        assert results["idempotent_failed"] == [] and results["other"] == []
        assert wait_until(lambda: pool.stats().ready == 4, timeout=20), pool.stats()
        assert pool.execute("ping")["pong"] is True
        assert not any(pid_alive(p) for p in seen - set(pool.pids()))
