"""`PoolExecutor`: a `concurrent.futures.Executor` over a pit pool.

    with PoolExecutor(max_workers=4) as ex:
        ex.submit(pow, 2, 10).result()                      # -> 1024
        list(ex.map(lambda x: x * x, range(10), chunksize=4))

Callables and their arguments are PICKLED (with `cloudpickle` for lambdas, closures and
functions of ``__main__``) and unpickled in the workers; results and exceptions come back
pickled. Building a PoolExecutor is the explicit opt-in to pickle that pit otherwise refuses
(`allow_pickle`): only give it callables and values you would unpickle yourself. The pool is
local-only like any pit pool (workers on this machine, reached over unix sockets / loopback).

    caller threads                 pit pool (its loop)              the executor's thread
    --------------                 -------------------              ---------------------
    submit: pickle -> Future  ->   pending (PENDING, cancellable)
                                   at most max_workers * QUEUED_PER_WORKER calls in the pool:
                                   -> tool `call` on a worker       -> answer: unpickle,
                                      (runtime/adapters/executor)      set the Future (runs
                                                                       its callbacks), send
                                                                       the next pending one

A future is RUNNING from the moment its call is handed to the pool; until then `cancel()`
and ``shutdown(cancel_futures=True)`` take it back. The executor holds no reference to a
finished future or its result.

Failure semantics, where they differ from `ProcessPoolExecutor`:
- a worker that dies mid-call fails only that call's future, with `WorkerCrashed` (a
  `BrokenProcessPool`, and a `runtime.WorkerExit` naming the exit code or signal); the pool
  replaces the worker and the executor goes on;
- an exception or result that cannot be pickled, or a task the worker cannot unpickle, fails
  that future with the pickling error; an answer the host cannot unpickle fails it with the
  unpickling error (never a broken executor);
- ``initializer`` runs once in each worker as it starts (``max_tasks_per_child`` recycles
  workers, so it runs again in their replacements). If it raises while the executor starts,
  the executor is broken: every submit raises `InitializerFailed` (a `BrokenProcessPool`)
  naming the error. If it raises later, in a replacement worker, the pool keeps retrying the
  start with backoff, as for any worker that fails to start.
- ``max_tasks_per_child`` is the pool's ``max_requests``, jittered by +-10 % past 1 so that
  workers do not all recycle at once; a map chunk counts as one task.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import hashlib
import os
import pickle
import queue
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters.executor import CHUNK, OK, RAISE
from ..errors import PitError, RemoteTraceback, WorkerExit, WorkerStartError
from .sync_pool import Pool

ADAPTER = "runtime.adapters.executor:ExecutorAdapter"
QUEUED_PER_WORKER = 2  # calls handed to the pool per worker: one running, one ready to go
NO_LIMIT = 1_000_000_000  # "never" for the pool's circuit breaker and poison quarantine
DAY_MS = 86_400_000  # how long a call may wait in the pool's queue (the executor has no limit)
_live: weakref.WeakSet[PoolExecutor] = weakref.WeakSet()  # shut down at interpreter exit


class WorkerCrashed(WorkerExit, BrokenProcessPool):
    """The worker running this future's call died (crashed, was killed, exited). Only this
    future fails: the executor replaces the worker and goes on."""


class InitializerFailed(WorkerStartError, BrokenProcessPool):
    """The executor's ``initializer`` raised while its workers started: it runs nothing."""


@dataclass(slots=True)
class _Item:
    future: Future[Any]
    tool: str  # "call" or "call_chunk"
    task: bytes | None  # dropped once handed to the pool


def _dumps(obj: Any, fn: Any) -> bytes:
    """Pickle a task: by reference with `pickle`, by value with `cloudpickle` for what
    pickle cannot name in a worker (lambdas, closures, ``__main__``'s functions)."""
    if getattr(fn, "__module__", None) != "__main__":
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            pass
    import cloudpickle

    return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _answered(answers: queue.SimpleQueue[Any], item: _Item, call: Future[Any]) -> None:
    answers.put((item, call))  # on the pool's loop: the executor's thread does the rest


def _with_cause(exc: BaseException, text: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(text)
    return exc


def _outcome(call: Future[Any]) -> tuple[bool, Any]:
    """(ok, value or exception) of a finished pool call."""
    try:
        raw = call.result()
    except WorkerExit as exc:
        crashed = WorkerCrashed(exc.message, details=exc.details, hint=(
            "the function crashed its worker (os._exit, a signal, out of memory?); the "
            "executor replaced it and runs the other futures"))
        crashed.__cause__ = exc
        return False, crashed
    except BaseException as exc:  # noqa: BLE001 - a pit error of this call
        return False, exc
    try:
        answer = pickle.loads(raw)
    except BaseException as exc:  # noqa: BLE001 - the answer cannot be read here
        return False, exc
    kind = answer[0]
    if kind == OK:
        return True, answer[1]
    if kind == RAISE:
        return False, _with_cause(answer[1], answer[2])
    if kind == CHUNK:
        error = answer[2]
        return True, (answer[1], None if error is None else _with_cause(*error))
    return False, PitError(f"unknown executor answer {kind!r}")


class _Dispatch:
    """The executor's queue and in-flight count, shared with its result thread (which does
    not hold the executor itself, so an executor dropped without shutdown is collected)."""

    def __init__(self, pool: Pool, limit: int, workdir: Path) -> None:
        self.pool = pool
        self.workdir = workdir  # the initializer's file: replacement workers read it too
        self.limit = limit
        self.lock = threading.Lock()
        self.pending: collections.deque[_Item] = collections.deque()
        self.in_flight = 0
        self.shutdown = False
        self.answers: queue.SimpleQueue[tuple[_Item, Future[Any]] | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pit-executor", daemon=True)

    def add(self, item: _Item) -> None:
        with self.lock:
            self.pending.append(item)
            ready = self._take()
        self._send(ready)

    def _take(self) -> list[_Item]:
        """Items to hand to the pool now (under the lock): PENDING becomes RUNNING."""
        ready = []
        while self.pending and self.in_flight < self.limit:
            item = self.pending.popleft()
            if item.future.set_running_or_notify_cancel():
                self.in_flight += 1
                ready.append(item)
        return ready

    def _send(self, items: list[_Item]) -> None:
        answers = self.answers
        for item in items:
            task, item.task = item.task, None
            try:
                call = self.pool.submit(item.tool, {"task": task}, idempotent=False)
            except BaseException as exc:  # noqa: BLE001 - e.g. the pool closed under us
                failed: Future[Any] = Future()
                failed.set_exception(exc)
                answers.put((item, failed))
                continue
            call.add_done_callback(functools.partial(_answered, answers, item))

    def cancel_pending(self) -> None:
        with self.lock:
            items, self.pending = list(self.pending), collections.deque()
        for item in items:
            item.future.cancel()

    def stop(self) -> None:
        """No new work: close the pool once what is pending and running has finished."""
        with self.lock:
            self.shutdown = True
        self.answers.put(None)  # wake the thread: it may already be idle

    def _run(self) -> None:
        while True:
            if not self._settle_next():
                break
        try:
            self.pool.close()
        finally:
            remove_dir(self.workdir)
            self.closed.set()

    def _settle_next(self) -> bool:
        """Settle one answer; False once shut down and idle. (A function of its own, so the
        last answer's future and value are not kept alive while waiting for the next.)"""
        got = self.answers.get()
        if got is not None:
            item, call = got
            ok, value = _outcome(call)
            future, item.future = item.future, None  # type: ignore[assignment]
            if ok:
                future.set_result(value)  # runs its done callbacks on this thread
            else:
                future.set_exception(value)
            with self.lock:
                self.in_flight -= 1
                ready = self._take()
            self._send(ready)
        with self.lock:
            return not (self.shutdown and not self.pending and not self.in_flight)


class PoolExecutor(Executor):
    """A `concurrent.futures.Executor` whose workers are a pit pool (see the module doc).

    ``max_workers`` (default: the CPU count) workers; ``initializer(*initargs)`` runs in
    each as it starts; ``max_tasks_per_child`` recycles a worker after that many tasks;
    ``python`` (an interpreter path or a version like "3.12") and ``requirements`` (PEP 508
    strings or a requirements file) give the workers an environment of their own, built by
    pit's env machinery (`cloudpickle` is added to it). ``name`` names the pool (`pit status`
    lists it); other keywords are pool settings (`runtime.PoolConfig`)."""

    def __init__(self, max_workers: int | None = None, *,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), max_tasks_per_child: int | None = None,
                 python: str | None = None, requirements: Sequence[str] | str | None = None,
                 name: str | None = None, **pool_options: Any) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        self._workdir = Path(tempfile.mkdtemp(prefix="pit-executor-"))  # 0700
        options: dict[str, Any] = {
            "call_timeout_ms": 0, "queue_timeout_ms": DAY_MS, "max_retries": 0,
            "circuit_threshold": NO_LIMIT, "poison_after": NO_LIMIT, **pool_options}
        if initializer is not None:
            init = self._workdir / "initializer.pickle"
            init.write_bytes(_dumps((initializer, tuple(initargs)), initializer))
            options["adapter_args"] = {"initializer": str(init)}
        if python is not None or requirements:
            options["python"] = python
            options["requirements"] = _with_cloudpickle(requirements)
        name = name or _pool_name(python, requirements)
        self._broken: BaseException | None = None
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        pool = Pool(name=name, adapter=ADAPTER, size=max_workers,
                    max_requests=max_tasks_per_child or 0, **options)
        self._dispatch = _Dispatch(pool, max_workers * QUEUED_PER_WORKER, self._workdir)
        try:
            pool.start()
        except PitError as exc:
            pool.close()
            remove_dir(self._workdir)
            if initializer is None or not isinstance(exc, WorkerStartError):
                raise
            self._broken = exc  # as the stdlib's: the executor exists, and refuses work
            self._dispatch.closed.set()
        else:
            self._dispatch.thread.start()
        weakref.finalize(self, self._dispatch.stop)
        _live.add(self)

    @property
    def pool(self) -> Pool:
        """The pit pool the calls run on (its stats, pids)."""
        return self._dispatch.pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._submit("call", fn, (fn, args, kwargs))

    def _submit(self, tool: str, fn: Any, task: Any) -> Future[Any]:
        with self._shutdown_lock:
            if self._broken is not None:
                raise InitializerFailed(
                    f"the executor's initializer failed, so it runs nothing: {self._broken}",
                    hint="fix the initializer (its traceback is in the cause), then build a "
                         "new PoolExecutor") from self._broken
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future[Any] = Future()
        try:
            data = _dumps(task, fn)
        except BaseException as exc:  # noqa: BLE001 - as the stdlib: the future gets it
            future.set_exception(exc)
            return future
        del task
        self._dispatch.add(_Item(future, tool, data))
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        """``fn`` over the zipped iterables, in order. Every call is submitted now (as the
        stdlib does); results are yielded as the caller asks. A call's exception raises when
        its value is reached; ``timeout`` (seconds from this call) raises TimeoutError from
        ``__next__``. ``chunksize`` items travel as one call (their values come back together,
        an error after the values before it); closing the iterator cancels what has not run."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            calls = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]
            return _results(calls, end)
        futures = []
        items = zip(*iterables, strict=False)
        while chunk := list(_take(items, chunksize)):
            futures.append(self._submit("call_chunk", fn, (fn, chunk)))
        return _chunk_results(futures, end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; ``cancel_futures`` cancels what has not started; ``wait`` blocks
        until every running future has finished and the workers have stopped. Without it,
        they stop once the last future finishes."""
        with self._shutdown_lock:
            self._shutdown = True
        if cancel_futures:
            self._dispatch.cancel_pending()
        self._dispatch.stop()
        if wait:
            self._dispatch.closed.wait()

    def __enter__(self) -> PoolExecutor:
        return self


def remove_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        for f in path.iterdir():
            f.unlink()
        path.rmdir()


def _take(items: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        try:
            yield next(items)
        except StopIteration:
            return


def _result_or_cancel(future: Future[Any], end: float | None) -> Any:
    try:
        try:
            return future.result(None if end is None else end - time.monotonic())
        finally:
            future.cancel()
    finally:
        del future  # the caller holds the value; nothing here keeps it (or the future)


def _results(futures: list[Future[Any]], end: float | None) -> Iterator[Any]:
    try:
        futures.reverse()
        while futures:
            yield _result_or_cancel(futures.pop(), end)
    finally:
        for future in futures:
            future.cancel()


def _chunk_results(futures: list[Future[Any]], end: float | None) -> Iterator[Any]:
    try:
        futures.reverse()
        while futures:
            values, error = _result_or_cancel(futures.pop(), end)
            values.reverse()
            while values:
                yield values.pop()
            if error is not None:
                raise error
    finally:
        for future in futures:
            future.cancel()


def _with_cloudpickle(requirements: Sequence[str] | str | None) -> list[str]:
    from importlib import metadata

    items = [requirements] if isinstance(requirements, str) else list(requirements or ())
    return [*items, f"cloudpickle=={metadata.version('cloudpickle')}"]


def _pool_name(python: str | None, requirements: Sequence[str] | str | None) -> str:
    """"executor", or for an env of its own a name per (python, requirements): pools of one
    name share an env dir, so two different envs must not share one name."""
    if python is None and not requirements:
        return "executor"
    key = repr((python, requirements)).encode()
    return "executor-" + hashlib.sha256(key).hexdigest()[:8]


@atexit.register
def _shutdown_all() -> None:
    # As the stdlib's executors: what was submitted still runs before the interpreter exits.
    # Registered after `sync_pool`'s own exit hook (imported above), so it runs before it.
    for executor in list(_live):
        with contextlib.suppress(Exception):
            executor.shutdown(wait=True)
