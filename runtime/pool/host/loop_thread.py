"""A private asyncio event loop on a daemon thread: how the sync API drives the async core."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ...errors import ShutdownError
from ...logs import logger

T = TypeVar("T")
log = logger("pool")
STOP_TIMEOUT_S = 5.0


async def off_loop(fn: Callable[[], T]) -> T:
    """``fn()`` (blocking) on a thread, or here when threads are no longer handed work: at
    interpreter exit asyncio's executor refuses it before atexit hooks run, and what a pool
    does then (the atexit close of a forgotten pool, a `PoolExecutor` draining its work) must
    still happen."""
    try:
        fut = asyncio.get_running_loop().run_in_executor(None, fn)
    except RuntimeError:  # refused (only that: an error of fn itself must not run it twice)
        return fn()
    return await fut


class LoopThread:
    def __init__(self, name: str = "pit-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._inbox: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque())
        self._wake_pending = False
        self._wake_lock = threading.Lock()  # the eventfd's writes and its close
        self._stop_lock = threading.Lock()
        self._closed = False  # set by `stop` once the loop is closed, before it fails the inbox
        # by `submit`, not done yet: their coroutines (closed by `stop` if never run)
        self._submitted: dict[concurrent.futures.Future[Any], Coroutine[Any, Any, Any]] = {}
        # the pumps of the sync API's streams open on this loop: a pool's close stops them,
        # and a pump that starts after that (opened as the pool closed) stops at once
        self.stream_pumps: set[asyncio.Task[Any]] = set()
        self.streams_stopped = False
        # Linux: wake the loop through an eventfd of our own: one write and one read a wake-up,
        # where call_soon_threadsafe's self-pipe costs a send, two recvs and an exception.
        self._wake_fd = -1
        if hasattr(os, "eventfd"):
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.loop.add_reader(self._wake_fd, self._woken)
        self._thread.start()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, from any thread.

        Unlike call_soon_threadsafe, a burst of calls wakes the loop once: callers append to
        an inbox and only the first since the last drain wakes the loop.
        """
        self._inbox.append((fn, args))
        if self._closed:  # after the append: `stop` sets it before failing the inbox
            self._refuse()
        if not self._wake_pending:
            self._wake_pending = True
            try:
                with self._wake_lock:  # once per wake-up: `stop` closes the fd under it
                    if self._wake_fd >= 0:
                        os.eventfd_write(self._wake_fd, 1)
                    else:
                        self.loop.call_soon_threadsafe(self._drain)
            except (OSError, RuntimeError):  # the loop is closed (or closing)
                self._refuse()

    def _refuse(self) -> None:
        # Not through `_wake_pending`: the first refusal leaves it set, and the calls after
        # it, seeing a wake-up pending, would wait in the inbox for ever.
        self._fail_inbox()
        raise ShutdownError("pit's event loop has stopped: its pool is closed") from None

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        self._drain()

    def _drain(self) -> None:
        self._wake_pending = False  # before draining: a later append schedules another drain
        inbox = self._inbox
        while inbox:
            fn, args = inbox.popleft()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one broken callback must not strand the rest
                log.exception("a callback handed to pit's loop failed")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise ShutdownError("pit's event loop has stopped: its pool is closed") from None
        self._submitted[fut] = coro  # failed by `stop` if the loop never runs it
        if self._closed:  # `stop` closed the loop since, and may have looked before the line above
            self._abandon(fut, coro)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: concurrent.futures.Future[Any]) -> None:
        self._submitted.pop(fut, None)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result from this (other) thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync pit call was made from inside pit's own event loop; "
                               "use AsyncPool from async code")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        with self._stop_lock:  # two closes at once (two threads): one stops, one returns
            self._stop()

    def _stop(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop():
            self._thread.join(STOP_TIMEOUT_S)
            if not self._thread.is_alive():
                with self._wake_lock:  # no caller writes to the fd (or its number reused)
                    fd, self._wake_fd = self._wake_fd, -1
                if fd >= 0:
                    self.loop.remove_reader(fd)
                    os.close(fd)
                self.loop.close()
                # What was handed to the loop as it stopped never runs: its waiters must not
                # wait for ever (a call or a stream's next batch racing with a pool's close).
                self._closed = True
                self._fail_inbox()
                for fut, coro in list(self._submitted.items()):
                    self._abandon(fut, coro)

    @staticmethod
    def _abandon(fut: concurrent.futures.Future[Any], coro: Coroutine[Any, Any, Any]) -> None:
        """A submitted coroutine the closed loop never ran (or never finished): its future fails."""
        if not fut.done():
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                with contextlib.suppress(ValueError):  # `stop` and `submit` both closing it
                    coro.close()  # never started: closed, not "never awaited"
            _fail(fut)

    def _fail_inbox(self) -> None:
        """Callbacks the loop will never run: each future among their arguments (the result
        of a call handed to the loop) fails with ShutdownError."""
        while True:
            try:  # callers refused at once may drain it too, on their threads
                _, args = self._inbox.popleft()
            except IndexError:
                return
            for arg in args:
                if isinstance(arg, concurrent.futures.Future):
                    _fail(arg)


def _fail(fut: concurrent.futures.Future[Any]) -> None:
    """``fut`` fails with ShutdownError unless it is done: its caller may cancel it meanwhile."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if not fut.done():
            fut.set_exception(ShutdownError(
                "pit's event loop stopped before it ran this: its pool closed"))
