"""`PoolExecutor`: a `concurrent.futures.Executor` over a pit pool.

    with PoolExecutor(max_workers=4) as ex:
        ex.submit(pow, 2, 10).result()                      # -> 1024
        list(ex.map(lambda x: x * x, range(10), chunksize=4))

Callables and their arguments are PICKLED (with `cloudpickle` for lambdas, closures and
functions of ``__main__``) and unpickled in the workers; results and exceptions come back
pickled. Building a PoolExecutor is the explicit opt-in to pickle that pit otherwise refuses
(`allow_pickle`): only give it callables and values you would unpickle yourself. The pool is
local-only (workers on this machine, reached over unix sockets); ``backend="ray"`` is refused.

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
- ``max_tasks_per_child`` is the pool's ``max_requests`` with ``recycle_overlap = false``: a
  worker takes no task past its limit, and tasks wait for its replacement. From 5 up the
  limit is jittered by +-10 % so that workers do not all recycle at once; a map chunk counts
  as one task.
- the pool does not pipeline (``pipeline_depth = 0``): a task never waits inside a busy
  worker while another is idle. With pipelining, a task queued behind one that waits for it
  (a consumer waiting on its producer) would wait for ever; tests/integration/
  test_executor.py::test_as_completed_and_wait times out that way. For many tiny independent
  tasks, ``pipeline_depth=16`` is faster (on a crash, the pool reruns the queued tasks the
  worker had not started; one it had finished but not yet answered fails too);
- a worker is pinged as any pit worker: a task that holds the GIL for longer than
  ``heartbeat_timeout_ms`` x ``heartbeat_max_missed`` (30 s by default; pure Python code
  does not, C code may) is taken for a hung worker and killed (`WorkerCrashed`); pass
  ``heartbeat_interval_ms=0`` to turn the pings off;
- a lambda, closure or ``__main__`` function travels by value (cloudpickle), which loads
  only on the host's Python version: with ``python`` of another version, submit raises a
  PicklingError (in the future) that says to define the function in an importable module.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from . import warm_zygote

warm_zygote.prestart()  # as runtime.pool.api does: the fork server imports beside ours below

from ..envs import resolve  # noqa: E402 - after the prestart, on purpose
from ..errors import WorkerStartError  # noqa: E402
from .executor_dispatch import Dispatch, InitializerFailed, Item, WorkerCrashed  # noqa: E402
from .sync_pool import Pool  # noqa: E402

__all__ = ["InitializerFailed", "PoolExecutor", "WorkerCrashed", "dumps_task"]

ADAPTER = "runtime.adapters.executor:ExecutorAdapter"
QUEUED_PER_WORKER = 2  # calls handed to the pool per worker: one running, one ready to go
NO_LIMIT = 1_000_000_000  # "never" for the pool's circuit breaker and poison quarantine
DAY_MS = 86_400_000  # how long a call may wait in the pool's queue (the executor has no limit)
_live: weakref.WeakSet[PoolExecutor] = weakref.WeakSet()  # shut down at interpreter exit


def dumps_task(obj: Any, fn: Any, worker_python: str | None = None) -> bytes:
    """Pickle a task: by reference with `pickle`, by value with `cloudpickle` for what
    pickle cannot name in a worker (lambdas, closures, ``__main__``'s functions). By-value
    code loads only on the host's Python version: ``worker_python`` names the workers' when
    it is another, and such a task is refused with an error that says what to do."""
    refused: Exception | None = None
    if getattr(fn, "__module__", None) != "__main__":
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            refused = exc
    if worker_python is not None:
        host = ".".join(map(str, sys.version_info[:2]))
        why = f" (pickle: {refused})" if refused else " (it is defined in __main__)"
        raise pickle.PicklingError(
            f"{fn!r} and its arguments cannot be pickled by reference{why}, and pickled by "
            f"value (a lambda, a closure, __main__'s code) they load only on the host's "
            f"Python {host}, while this executor's workers run Python {worker_python}: "
            "define the function at module level in a module the workers can import") \
            from refused
    import cloudpickle

    return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


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
        if pool_options.get("backend", "local") != "local":
            # its initializer travels as a file of this machine, its tasks by shared memory
            raise ValueError("PoolExecutor runs its workers on this machine only; "
                             "backend = \"ray\" is for tool pools (runtime.Pool)")
        self._worker_python: str | None = None  # set when by-value code cannot load there
        if python is not None:
            found = resolve(python, sys.executable)
            if found.version[:2] != sys.version_info[:2]:
                self._worker_python = found.version_text
        self._broken: BaseException | None = None
        self._shutdown_lock = threading.Lock()
        self._shutdown = False
        self._workdir = Path(tempfile.mkdtemp(prefix="pit-executor-"))  # 0700
        try:
            pool = self._pool(max_workers, initializer, initargs, max_tasks_per_child, python,
                              requirements, name, pool_options)
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise
        self._dispatch = Dispatch(pool, max_workers * QUEUED_PER_WORKER, self._workdir)
        try:
            pool.start()
        except BaseException as exc:
            pool.close()
            shutil.rmtree(self._workdir, ignore_errors=True)
            if initializer is None or not isinstance(exc, WorkerStartError):
                raise
            self._broken = exc  # as the stdlib's: the executor exists, and refuses work
            self._dispatch.closed.set()
        else:
            self._dispatch.thread.start()
        weakref.finalize(self, self._dispatch.stop)
        _live.add(self)

    def _pool(self, max_workers: int, initializer: Callable[..., object] | None,
              initargs: tuple[Any, ...], max_tasks_per_child: int | None, python: str | None,
              requirements: Sequence[str] | str | None, name: str | None,
              pool_options: dict[str, Any]) -> Pool:
        options: dict[str, Any] = {
            "call_timeout_ms": 0, "queue_timeout_ms": DAY_MS, "max_retries": 0,
            "circuit_threshold": NO_LIMIT, "poison_after": NO_LIMIT,
            # no call queued inside a busy worker: an idle one takes it, and a crash fails
            # only the call that was running
            "pipeline_depth": 0,
            "recycle_overlap": max_tasks_per_child is None, **pool_options}
        if initializer is not None:
            init = self._workdir / "initializer.pickle"
            init.write_bytes(dumps_task((initializer, tuple(initargs)), initializer,
                                    self._worker_python))
            options["adapter_args"] = {"initializer": str(init)}
        if python is not None or requirements:
            options["python"] = python
            options["requirements"] = _with_cloudpickle(requirements)
        return Pool(name=name or _pool_name(python, requirements), adapter=ADAPTER,
                    size=max_workers, max_requests=max_tasks_per_child or 0, **options)

    @property
    def pool(self) -> Pool:
        """The pit pool the calls run on (its stats, pids)."""
        return self._dispatch.pool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._submit("call", fn, (fn, args, kwargs))

    def _submit(self, tool: str, fn: Any, task: Any) -> Future[Any]:
        self._refuse_if_closed()  # before pickling: a closed executor fails fast
        future: Future[Any] = Future()
        try:
            data = dumps_task(task, fn, self._worker_python)
        except BaseException as exc:  # noqa: BLE001 - as the stdlib: the future gets it
            future.set_exception(exc)
            return future
        del task
        with self._shutdown_lock:  # so a shutdown cannot close the pool under this item
            self._refuse_if_closed()
            self._dispatch.add(Item(future, tool, data))
        return future

    def _refuse_if_closed(self) -> None:
        if self._broken is not None:
            raise InitializerFailed(
                f"the executor's initializer failed, so it runs nothing: {self._broken}",
                hint="fix the initializer (its traceback is in the cause), then build a "
                     "new PoolExecutor") from self._broken
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

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
        if wait and threading.current_thread() is not self._dispatch.thread:
            self._dispatch.closed.wait()  # (from a done callback it cannot: that thread
            # closes the pool, once this callback has returned)

    def __enter__(self) -> PoolExecutor:
        return self


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
