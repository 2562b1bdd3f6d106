"""`runtime.PoolExecutor` against real workers, written from the documented semantics of
`concurrent.futures` (as CPython's own test_concurrent_futures is): submit, map (eager
submission, lazy results, order, errors at the right item, timeout, chunksize), shutdown
(wait, cancel_futures, after-shutdown RuntimeError), callbacks, as_completed, wait, no
references kept to finished results, no deadlock when a worker dies or a value cannot be
pickled, initializer semantics, and what it does better than ProcessPoolExecutor."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from typer.testing import CliRunner

import runtime
from runtime import InitializerFailed, PoolExecutor, WorkerCrashed
from runtime.errors import RemoteTraceback
from snakecli.app import app
from tests.adapters import executor_tasks as tasks
from tests.conftest import ROOT, pid_alive, wait_until


@pytest.fixture
def ex() -> Iterator[PoolExecutor]:
    with PoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A file the test creates to release calls blocked in `tasks.wait_for`."""
    return tmp_path / "gate"


# --- the interface ----------------------------------------------------------------------------

def test_submit_runs_in_another_process_with_args_and_kwargs(ex: PoolExecutor) -> None:
    assert ex.submit(pow, 2, 8).result() == 256
    assert ex.submit(tasks.mul, 3, y=4).result() == 12
    assert ex.submit(dict, self=2, fn=3).result() == {"self": 2, "fn": 3}  # any keyword
    assert ex.submit(tasks.pid).result() != os.getpid()
    assert ex.submit(tasks.pid).result() in ex.pool.pids()


def test_lambdas_closures_and_main_functions_travel_by_value(ex: PoolExecutor) -> None:
    base = 10
    assert ex.submit(lambda x: x + base, 5).result() == 15
    assert list(ex.map(lambda x: x * base, range(4), chunksize=3)) == [0, 10, 20, 30]


def test_an_exception_arrives_with_its_type_and_the_remote_traceback(ex: PoolExecutor) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        ex.submit(divmod, 1, 0).result()
    with pytest.raises(tasks.CustomError, match="boom") as custom:
        ex.submit(tasks.raise_custom, "boom").result()
    for err in (info.value, custom.value):
        assert isinstance(err.__cause__, RemoteTraceback)
    assert "raise_custom" in custom.value.__cause__.text  # type: ignore[union-attr]
    assert ex.submit(pow, 2, 2).result() == 4  # the executor goes on


def test_submit_after_shutdown_raises_runtime_error() -> None:
    ex = PoolExecutor(max_workers=1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 5)
    ex.shutdown()  # twice is fine
    with PoolExecutor(max_workers=1) as inside:
        pass
    with pytest.raises(RuntimeError, match="after shutdown"):
        inside.submit(pow, 2, 5)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_workers": 0}, ValueError, "max_workers must be greater than 0"),
    ({"max_workers": -1}, ValueError, "max_workers must be greater than 0"),
    ({"initializer": 5}, TypeError, "initializer must be a callable"),
    ({"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child must be >= 1"),
    ({"max_tasks_per_child": "3"}, TypeError, "max_tasks_per_child must be an integer"),
])
def test_bad_arguments_raise_before_any_worker_starts(kwargs: dict, error: type,
                                                      message: str) -> None:
    with pytest.raises(error, match=message):
        PoolExecutor(**kwargs)


def test_a_pending_future_can_be_cancelled_and_never_runs(tmp_path: Path, gate: Path) -> None:
    with PoolExecutor(max_workers=1) as ex:
        running = ex.submit(tasks.wait_for, str(gate), "ran")
        assert wait_until(running.running, timeout=30)
        assert not running.cancel()  # a running future cannot be cancelled
        queued = [ex.submit(tasks.touch, str(tmp_path / f"m{i}")) for i in range(8)]
        pending = [f for f in queued if not f.running()]
        assert pending and all(f.cancel() for f in pending)  # pending ones can
        gate.touch()
        assert running.result() == "ran"
    assert all(f.cancelled() for f in pending)
    ran = {p.name for p in tmp_path.iterdir() if p.name.startswith("m")}
    assert len(ran) == len(queued) - len(pending)  # the cancelled ones never ran


def test_future_result_timeout_raises_timeout_error(ex: PoolExecutor, gate: Path) -> None:
    fut = ex.submit(tasks.wait_for, str(gate), "late")
    with pytest.raises(TimeoutError):
        fut.result(timeout=0.05)
    gate.touch()
    assert fut.result() == "late"


# --- map --------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunksize", [1, 3, 100])
def test_map_matches_builtin_map_in_order(ex: PoolExecutor, chunksize: int) -> None:
    expected = list(map(pow, range(40), [2] * 40))
    assert list(ex.map(pow, range(40), [2] * 40, chunksize=chunksize)) == expected
    assert list(ex.map(pow, range(5), [2] * 9, chunksize=chunksize)) == expected[:5]  # shortest
    assert list(ex.map(pow, [], chunksize=chunksize)) == []


@pytest.mark.parametrize("chunksize", [1, 4])
def test_map_raises_an_error_at_the_item_that_failed(ex: PoolExecutor, chunksize: int) -> None:
    it = ex.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5], chunksize=chunksize)
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_rejects_a_chunksize_below_one(ex: PoolExecutor) -> None:
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        ex.map(pow, [1], [2], chunksize=0)


def test_map_submits_every_call_at_once_and_yields_lazily(ex: PoolExecutor, tmp_path: Path,
                                                          gate: Path) -> None:
    marks = [str(tmp_path / f"m{i}") for i in range(4)]
    it = ex.map(tasks.touch, marks)  # nothing iterated: the calls run anyway
    assert wait_until(lambda: all(Path(m).exists() for m in marks), timeout=30)
    assert list(it) == marks
    later = ex.map(tasks.wait_for, [str(tmp_path), str(gate)], ["first", "second"])
    assert next(later) == "first"  # while the second is still blocked
    gate.touch()
    assert next(later) == "second"


def test_map_timeout_raises_timeout_error_from_next(ex: PoolExecutor, gate: Path) -> None:
    results = []
    it = ex.map(tasks.wait_for, [str(gate.parent), str(gate.parent), str(gate)],
                [1, 2, 3], timeout=2)
    with pytest.raises(TimeoutError):
        for value in it:
            results.append(value)
    assert results == [1, 2][:len(results)]  # (on a loaded machine the first two may be late)
    gate.touch()


def test_closing_a_map_cancels_the_calls_not_yet_started(tmp_path: Path, gate: Path) -> None:
    with PoolExecutor(max_workers=1) as ex:
        marks = [str(tmp_path / f"m{i}") for i in range(20)]
        it = ex.map(tasks.wait_for, [str(tmp_path)] + [str(gate)] * 19, marks)
        assert next(it) == marks[0]
        it.close()  # as the stdlib's, once iteration began (a generator's finally)
        gate.touch()
    # the calls not yet handed to the pool never ran: closing cancelled their futures (what
    # was already running finished)
    assert ex.pool.stats().calls < 20


def test_map_keeps_no_reference_to_yielded_results(ex: PoolExecutor) -> None:
    for obj in ex.map(tasks.make_dummy, range(5)):
        ref = weakref.ref(obj)
        del obj
        assert wait_until(lambda: gc.collect() >= 0 and ref() is None)  # noqa: B023


def test_submit_from_many_threads_while_it_shuts_down() -> None:
    # Every future submit returned completes; every submit after shutdown raises.
    ex = PoolExecutor(max_workers=2)
    futures: list[cf.Future] = []
    refused = []

    def submitter(k: int) -> None:
        for i in range(40):
            try:
                futures.append(ex.submit(tasks.mul, k, i))
            except RuntimeError:
                refused.append(k)
                return

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    ex.shutdown(wait=False)
    for t in threads:
        t.join()
    ex.shutdown(wait=True)
    assert all(f.done() and f.exception() is None for f in futures)  # none left hanging
    assert {f.result() for f in futures} <= {k * i for k in range(6) for i in range(40)}


# --- futures: callbacks, as_completed, wait, references -------------------------------------

def test_done_callbacks_run_once_with_the_future_and_may_submit_more(ex: PoolExecutor) -> None:
    seen: list[object] = []
    chained: list[cf.Future] = []
    done = threading.Event()

    def callback(fut: cf.Future) -> None:
        seen.append(fut.result())
        chained.append(ex.submit(pow, 3, 2))  # from the executor's own thread: no deadlock
        done.set()

    fut = ex.submit(pow, 2, 3)
    fut.add_done_callback(callback)
    assert done.wait(30)
    assert seen == [8] and chained[0].result(timeout=30) == 9
    late: list[cf.Future] = []
    fut.add_done_callback(late.append)  # added once done: runs at once, in this thread
    assert late == [fut]


def test_as_completed_and_wait(ex: PoolExecutor, gate: Path) -> None:
    blocked = ex.submit(tasks.wait_for, str(gate), "blocked")
    quick = [ex.submit(pow, 2, i) for i in range(3)]
    done = {f.result() for f in cf.as_completed(quick, timeout=30)}
    assert done == {1, 2, 4}
    finished, pending = cf.wait([blocked, *quick], timeout=30,
                                return_when=cf.FIRST_COMPLETED)
    assert blocked in pending and finished
    failing = ex.submit(divmod, 1, 0)
    finished, pending = cf.wait([blocked, failing], timeout=30,
                                return_when=cf.FIRST_EXCEPTION)
    assert finished == {failing} and pending == {blocked}
    with pytest.raises(TimeoutError):
        list(cf.as_completed([blocked], timeout=0.05))
    gate.touch()
    finished, pending = cf.wait([blocked, *quick], return_when=cf.ALL_COMPLETED)
    assert not pending and blocked.result() == "blocked"


def test_no_reference_is_kept_to_a_submitted_callable_or_a_finished_result(
        ex: PoolExecutor) -> None:
    owner = tasks.Owner()
    collected = threading.Event()
    ref = weakref.ref(owner, lambda _: collected.set())
    fut = ex.submit(owner.method)
    del owner
    gc.collect()
    assert collected.is_set() and ref() is None  # pickled at submit: only bytes are kept
    assert fut.result() == 1
    result = ex.submit(tasks.make_dummy, 1).result()
    dummy = weakref.ref(result)
    del result
    # the executor keeps neither the future nor its value (its thread lets go of them
    # just after completing the future: wait for that, not for a fixed time)
    assert wait_until(lambda: gc.collect() >= 0 and dummy() is None)


# --- shutdown ---------------------------------------------------------------------------------

def test_shutdown_waits_for_pending_futures(tmp_path: Path) -> None:
    ex = PoolExecutor(max_workers=2)
    futures = [ex.submit(tasks.touch, str(tmp_path / f"m{i}")) for i in range(12)]
    pids = ex.pool.pids()
    ex.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert all((tmp_path / f"m{i}").exists() for i in range(12))
    assert not any(pid_alive(p) for p in pids)


def test_shutdown_cancel_futures_cancels_only_those_not_started(gate: Path) -> None:
    ex = PoolExecutor(max_workers=1)
    futures = [ex.submit(tasks.wait_for, str(gate), i) for i in range(30)]
    assert wait_until(lambda: futures[0].running(), timeout=30)
    ex.shutdown(wait=False, cancel_futures=True)
    gate.touch()
    ex.shutdown(wait=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20 and others  # what was running finished; the rest never ran
    assert all(f.done() and f.exception() is None for f in others)


def test_shutdown_without_wait_returns_and_running_futures_still_finish(gate: Path) -> None:
    ex = PoolExecutor(max_workers=1)
    fut = ex.submit(tasks.wait_for, str(gate), "finished")
    pids = ex.pool.pids()
    ex.shutdown(wait=False)
    assert not fut.done()  # shutdown did not wait for it
    with pytest.raises(RuntimeError):
        ex.submit(pow, 1, 1)
    gate.touch()
    assert fut.result(timeout=30) == "finished"
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=30)


def test_an_executor_dropped_without_shutdown_stops_its_workers() -> None:
    ex = PoolExecutor(max_workers=1)
    fut = ex.submit(pow, 2, 3)
    pids = ex.pool.pids()
    del ex
    gc.collect()
    assert fut.result(timeout=30) == 8
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=30)


def test_shutdown_from_a_done_callback_does_not_deadlock() -> None:
    ex = PoolExecutor(max_workers=1)
    called = threading.Event()

    def stop(_: cf.Future) -> None:
        ex.shutdown(wait=True)
        called.set()

    ex.submit(pow, 2, 2).add_done_callback(stop)
    assert called.wait(30)
    ex.shutdown(wait=True)


EXITS_WITHOUT_SHUTDOWN = """
import sys
from runtime import PoolExecutor
from tests.adapters import executor_tasks as tasks
ex = PoolExecutor(max_workers=1)
ex.submit(tasks.wait_for, sys.argv[1])
ex.submit(tasks.touch, sys.argv[2])
"""


def test_work_submitted_before_the_interpreter_exits_still_runs(tmp_path: Path) -> None:
    done = tmp_path / "done"
    script = tmp_path / "script.py"
    script.write_text(EXITS_WITHOUT_SHUTDOWN)
    out = subprocess.run([sys.executable, str(script), str(tmp_path), str(done)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert done.exists()  # as the stdlib's executors: pending work ran before the exit


DRAINS_AT_EXIT = """
import sys, time
from runtime import PoolExecutor
from tests.adapters import executor_tasks as tasks
ex = PoolExecutor(max_workers=1)
ex.submit(time.sleep, 1.5)  # the pool samples its workers every 0.5 s meanwhile
ex.submit(tasks.touch, sys.argv[1])
"""


def test_a_pool_draining_at_exit_keeps_working_quietly(tmp_path: Path) -> None:
    """At exit, asyncio's thread executor refuses work before atexit hooks run: the pool's
    sampling task died with 'Task exception was never retrieved' on stderr while the executor
    drained its work."""
    done = tmp_path / "done"
    script = tmp_path / "script.py"
    script.write_text(DRAINS_AT_EXIT)
    out = subprocess.run([sys.executable, str(script), str(done)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert done.exists()
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr, out.stderr


# --- failures that must not deadlock ----------------------------------------------------------

@pytest.mark.parametrize("fn, fragment", [
    (tasks.exit_now, "exited with code 7"),
    (tasks.kill_self, "SIGKILL"),
])
def test_a_worker_that_dies_fails_only_its_future(fn: object, fragment: str,
                                                  gate: Path) -> None:
    with PoolExecutor(max_workers=2) as ex:
        other = ex.submit(tasks.wait_for, str(gate), "other")
        args = (7,) if fn is tasks.exit_now else ()
        with pytest.raises(WorkerCrashed, match=fragment) as info:
            ex.submit(fn, *args).result(timeout=60)  # type: ignore[arg-type]
        assert isinstance(info.value, BrokenProcessPool)
        assert isinstance(info.value, runtime.WorkerExit) and info.value.hint
        gate.touch()
        assert other.result(timeout=60) == "other"  # its neighbour was not touched
        assert ex.submit(pow, 2, 4).result(timeout=60) == 16  # and the executor goes on
        assert list(ex.map(pow, range(4), [2] * 4)) == [0, 1, 4, 9]


def test_sys_exit_in_the_function_is_its_exception(ex: PoolExecutor) -> None:
    pid = ex.submit(tasks.pid).result()
    with pytest.raises(SystemExit):
        ex.submit(tasks.sys_exit, 3).result()
    assert pid_alive(pid)


def test_values_that_cannot_be_pickled_fail_their_future_only(ex: PoolExecutor) -> None:
    with pytest.raises(TypeError, match="lock"):
        ex.submit(tasks.return_lock).result(timeout=60)  # the result, in the worker
    with pytest.raises(TypeError, match="lock"):
        ex.submit(tasks.arg_len, threading.Lock()).result(timeout=60)  # an argument, here
    with pytest.raises(RuntimeError, match="UnpicklableError") as info:
        ex.submit(tasks.raise_unpicklable).result(timeout=60)  # the exception, in the worker
    assert "raise_unpicklable" in info.value.__cause__.text  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="error at unpickle"):
        ex.submit(tasks.return_error_at_unpickle).result(timeout=60)  # the answer, here
    with pytest.raises(RuntimeError, match="error at unpickle"):
        ex.submit(tasks.echo, tasks.ErrorAtUnpickle()).result(timeout=60)  # the task, there
    # an exception that unpickles as a str: its future was left pending for ever
    with pytest.raises(TypeError, match="unpickled here as a str") as raised:
        ex.submit(tasks.raise_not_an_error_when_unpickled).result(timeout=60)
    assert "NotAnErrorWhenUnpickled: x" in str(raised.value)  # the worker's traceback
    assert ex.submit(pow, 3, 3).result(timeout=60) == 27


def test_large_arguments_and_results_round_trip(ex: PoolExecutor) -> None:
    blob = os.urandom(8 * 1024 * 1024)  # past shm_threshold_kb: shared memory, not JSON
    assert ex.submit(tasks.arg_len, blob).result() == len(blob)
    assert ex.submit(tasks.echo, blob).result() == blob


# --- initializer and workers ------------------------------------------------------------------

def test_initializer_runs_in_every_worker_before_its_first_task() -> None:
    with PoolExecutor(max_workers=2, initializer=tasks.init,
                      initargs=("initialized",)) as ex:
        assert set(ex.map(lambda _: tasks.get_init_status(), range(6))) == {"initialized"}


def test_a_failing_initializer_leaves_the_executor_refusing_work() -> None:
    ex = PoolExecutor(max_workers=2, initializer=tasks.init_fails,
                      initargs=("error in initializer",))
    with pytest.raises(InitializerFailed, match="error in initializer") as info:
        ex.submit(pow, 2, 2)
    assert isinstance(info.value, BrokenProcessPool) and info.value.hint
    with pytest.raises(cf.BrokenExecutor):
        ex.submit(pow, 2, 2)  # from now on, every time
    ex.shutdown()


def test_max_tasks_per_child_replaces_a_worker_after_exactly_that_many() -> None:
    with PoolExecutor(max_workers=1, max_tasks_per_child=3, initializer=tasks.init,
                      initargs=("initialized",)) as ex:
        runs = [ex.submit(tasks.pid_and_status).result() for _ in range(4)]
    pids = [pid for pid, _ in runs]
    assert pids[0] == pids[1] == pids[2] != pids[3]  # as the stdlib's own test pins
    assert {status for _, status in runs} == {"initialized"}  # the replacement ran it too



def test_max_tasks_per_child_is_exact_for_tasks_queued_together() -> None:
    """Tasks submitted together queue in the pool: the slot a worker freed at its limit went
    to the next queued task before the recycle closed it to new work, so each ran one more."""
    with PoolExecutor(max_workers=1, max_tasks_per_child=2) as ex:
        futures = [ex.submit(tasks.pid_and_status) for _ in range(6)]
        runs = [f.result()[0] for f in futures]
    assert runs[0::2] == runs[1::2] and len(set(runs)) == 3, runs


def test_pit_status_sees_the_executor_pool() -> None:
    with PoolExecutor(max_workers=2, name="crunch") as ex:
        assert ex.submit(pow, 2, 2).result() == 4
        result = CliRunner().invoke(app, ["status", "--json"],
                                    env={"NO_COLOR": "1", "COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        [snap] = json.loads(result.output)
        [pool] = snap["pools"]
        assert pool["name"] == "crunch" and pool["calls"] == 1
        assert {w["pid"] for w in pool["workers"]} == set(ex.pool.pids())


def test_pickle_is_only_used_by_the_executor_pool() -> None:
    # The executor's adapter takes pickles; an ordinary pool still refuses them.
    task = pickle.dumps((pow, (2, 2), {}))
    with runtime.Pool(size=1, adapter="runtime.adapters.executor:ExecutorAdapter") as pool:
        assert pickle.loads(pool.execute("call", {"task": task})) == ("ok", 4)
    with runtime.Pool(size=1) as pool, pytest.raises(runtime.InvalidArgument, match="pickle"):
        pool.execute("echo", {"x": runtime.Pickled(1)})


@pytest.mark.slow
def test_python_version_and_requirements_of_its_own() -> None:
    other = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"
    with PoolExecutor(max_workers=1, python=other, requirements=["six==1.16.0"]) as ex:
        assert ex.submit(tasks.python_version).result() == other
        assert ex.submit(tasks.module_version, "six").result() == "1.16.0"
        # code pickled by value loads only on the host's version: refused, saying what to do
        with pytest.raises(pickle.PicklingError, match="define the function at module level"):
            ex.submit(lambda: 1).result()
    assert importlib.util.find_spec("six") is None  # not in the host
