"""The machinery behind `PoolExecutor`: its queue of futures not yet handed to the pool,
the count in flight, and the thread that settles answers (see `runtime.pool.executor`).

One lock guards the queue and the count. Callers' threads add items; the pool's loop only
puts finished calls on the answers queue; the executor's thread unpickles them, completes
the futures (their done callbacks run there, never on the pool's loop, so a callback may
submit more work), and hands the pool the next pending items.
"""

from __future__ import annotations

import collections
import functools
import pickle
import queue
import shutil
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters.executor import CHUNK, OK, RAISE
from ..errors import PitError, RemoteTraceback, WorkerExit, WorkerStartError
from ..logs import logger
from .sync_pool import Pool

log = logger("pool")


class WorkerCrashed(WorkerExit, BrokenProcessPool):
    """The worker running this future's call died (crashed, was killed, exited). Only this
    future fails: the executor replaces the worker and goes on."""


class InitializerFailed(WorkerStartError, BrokenProcessPool):
    """The executor's ``initializer`` raised while its workers started: it runs nothing."""

@dataclass(slots=True)
class Item:
    future: Future[Any]
    tool: str  # "call" or "call_chunk"
    task: bytes | None  # dropped once handed to the pool


def _answered(answers: queue.SimpleQueue[Any], item: Item, call: Future[Any]) -> None:
    answers.put((item, call))  # on the pool's loop: the executor's thread does the rest


def _with_cause(exc: Any, text: str) -> BaseException:
    if not isinstance(exc, BaseException):  # its class pickles it as something else
        return TypeError(f"the function raised an exception that unpickled here as a "
                         f"{type(exc).__name__} ({exc!r:.200}), not an exception; in the "
                         f"worker:\n{text}")
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


class Dispatch:
    """The executor's queue and in-flight count, shared with its result thread (which does
    not hold the executor itself, so an executor dropped without shutdown is collected)."""

    def __init__(self, pool: Pool, limit: int, workdir: Path) -> None:
        self.pool = pool
        self.workdir = workdir  # the initializer's file: replacement workers read it too
        self.limit = limit
        self.lock = threading.Lock()
        self.pending: collections.deque[Item] = collections.deque()
        self.in_flight = 0
        self.shutdown = False
        self.answers: queue.SimpleQueue[tuple[Item, Future[Any]] | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pit-executor", daemon=True)

    def add(self, item: Item) -> None:
        with self.lock:
            self.pending.append(item)
            ready = self._take()
        self._send(ready)

    def _take(self) -> list[Item]:
        """Items to hand to the pool now (under the lock): PENDING becomes RUNNING."""
        ready = []
        while self.pending and self.in_flight < self.limit:
            item = self.pending.popleft()
            if item.future.set_running_or_notify_cancel():
                self.in_flight += 1
                ready.append(item)
        return ready

    def _send(self, items: list[Item]) -> None:
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
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.closed.set()

    def _settle_next(self) -> bool:
        """Settle one answer; False once shut down and idle. (A function of its own, so the
        last answer's future and value are not kept alive while waiting for the next.)"""
        got = self.answers.get()
        if got is not None:
            item, call = got
            future, item.future = item.future, None  # type: ignore[assignment]
            try:
                ok, value = _outcome(call)
                if ok:
                    future.set_result(value)  # runs its done callbacks on this thread
                else:
                    future.set_exception(value)
                del value  # the caller alone holds it now
            except BaseException as exc:  # noqa: BLE001 - this thread must live on, or all wait
                log.exception("PoolExecutor: settling a future failed")
                if not future.done():  # never left pending
                    future.set_exception(exc)
            finally:
                del future
                with self.lock:
                    self.in_flight -= 1
                    ready = self._take()
            self._send(ready)
        with self.lock:
            return not (self.shutdown and not self.pending and not self.in_flight)
