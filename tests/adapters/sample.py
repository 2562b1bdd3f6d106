"""Adapters used by the integration tests (imported by real worker processes)."""

from __future__ import annotations

import asyncio
import builtins
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from runtime.worker import Adapter, SessionContext, telemetry, tool


class QuotaExceeded(Exception):
    """A tool's own exception class (not a builtin)."""


class SampleAdapter(Adapter):
    def initialize(self) -> None:
        self.history: list[str] = []
        self.active = 0
        self.overlaps = 0

    def _enter(self) -> None:
        if self.active:
            self.overlaps += 1  # two calls ran at once in this (non-thread-safe) adapter
        self.active += 1

    @tool
    def guarded(self) -> int:
        self._enter()
        self.active -= 1
        return self.overlaps

    @tool
    def guarded_stream(self, n: int) -> Iterator[int]:
        self._enter()
        try:
            for i in range(n):
                time.sleep(0.001)
                yield i
        finally:
            self.active -= 1

    @tool
    def record(self, tag: str) -> int:
        """Remember tag; the history shows which calls really ran."""
        self.history.append(tag)
        return len(self.history)

    @tool
    def get_history(self) -> list[str]:
        return self.history

    @tool
    def remember(self, ctx: SessionContext, item: str) -> dict:
        items = ctx.session.setdefault("items", [])
        items.append(item)
        return {"items": items, "pid": os.getpid()}

    @tool
    def remaining_ms(self, ctx: SessionContext) -> float | None:
        left = ctx.remaining()
        return None if left is None else left * 1000

    def on_session_end(self, session_id: str, state: dict) -> None:
        marker = os.environ.get("PIT_TEST_SESSION_LOG")
        if marker:
            with open(marker, "a") as fh:
                fh.write(f"{session_id}:{','.join(state.get('items', []))}\n")

    @tool
    def block(self, seconds: float) -> str:
        """Sleep in C without looking at cancellation (only a kill stops it)."""
        time.sleep(seconds)
        return "woke"

    @tool
    def hold_gil(self, seconds: int) -> None:
        """Sleep in C *holding* the GIL: the worker cannot even answer a heartbeat."""
        import ctypes

        ctypes.PyDLL(None).sleep(seconds)

    @tool
    def spin(self, seconds: float) -> int:
        """A pure-Python loop that ignores ctx.cancelled (stopped by CallCancelled)."""
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    @tool
    def broken_stream(self, n: int) -> Iterator[int]:
        yield from range(n)
        raise RuntimeError("stream broke")

    @tool(name="renamed", description="a tool published under another name")
    def original(self, x: int = 1) -> int:
        return x * 10

    @tool
    async def async_stream(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @tool
    def env(self, name: str) -> str | None:
        return os.environ.get(name)

    @tool
    def module_file(self, name: str) -> str:
        """Where module ``name`` is imported from (a Ray runtime_env's packages)."""
        import importlib

        return str(importlib.import_module(name).__file__)

    @tool
    def exit_now(self) -> None:
        raise SystemExit(4)

    @tool
    def raise_as(self, kind: str, message: str = "boom") -> None:
        """Raise a builtin exception named ``kind``, or a custom class when kind is 'custom'."""
        if kind == "custom":
            raise QuotaExceeded(message)
        raise getattr(builtins, kind)(message)

    @tool
    def die_of_cuda_oom(self) -> None:
        """Die as a CUDA library does when the device runs out: message, then exit."""
        print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB "
              "total capacity; 1.00 GiB free)", file=sys.stderr, flush=True)
        os._exit(1)

    @tool
    def crash_once(self, marker: str) -> str:
        """Kill this worker the first time (per marker file); succeed afterwards."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        return "survived"

    @tool
    def segfault(self) -> None:
        import ctypes

        print("about to read address 0", flush=True)
        ctypes.string_at(0)

    @tool
    def abort_now(self) -> None:
        os.abort()

    @tool
    def watched_stream(self, n: int, size: int, progress: str,
                       as_json: bool = False) -> Iterator[Any]:
        """Yield n chunks of size bytes (as_json: n small ints, which share chunks); record
        how far it got, and that finally ran."""
        try:
            for i in range(n):
                if i % 500 == 0:  # replaced whole: a reader never sees it empty
                    with open(progress + ".tmp", "w") as fh:
                        fh.write(str(i))
                    os.replace(progress + ".tmp", progress)
                yield i if as_json else b"x" * size
        finally:
            with open(progress + ".finally", "w") as fh:
                fh.write("ran")

    @tool
    def gated_stream(self, gate: str) -> Iterator[Any]:
        """Yield "first", then wait (10 s at most) for the caller to create ``gate``."""
        yield "first"
        for _ in range(1000):
            if os.path.exists(gate):
                yield "released"
                return
            time.sleep(0.01)
        yield "the first item was held back until the generator went on"

    @tool
    def mixed_stream(self) -> Iterator[Any]:
        yield from (1, {"two": 2}, b"three", "four", b"five", [6])
        raise ValueError("after six")

    @tool
    def make_bytes(self, n: int) -> bytes:
        return b"x" * n

    @tool
    def array_info(self, arr: Any) -> dict:
        """What the worker received: type, dtype, shape, order, writability, a checksum."""
        return {"type": type(arr).__name__, "dtype": str(arr.dtype), "shape": list(arr.shape),
                "fortran": bool(arr.flags.f_contiguous and not arr.flags.c_contiguous),
                "writeable": bool(arr.flags.writeable), "sum": float(arr.sum())}

    @tool
    def array_scale(self, arr: Any, k: float) -> Any:
        return arr * k

    @tool
    def make_array(self, n: int) -> Any:
        import numpy as np

        return np.arange(n, dtype=np.float64)

    @tool
    def slow_echo(self, data: bytes, seconds: float) -> bytes:
        time.sleep(seconds)
        return data

    @tool
    def make_chunks(self, count: int, n: int) -> Iterator[bytes]:
        for _ in range(count):
            yield b"x" * n

    @tool
    def unserializable(self) -> object:
        """A set: an error on a pool with strict_results, else a list."""
        return {1, 2, 3}

    @tool
    def emit_events(self, n: int, name: str = "sample.tick") -> int:
        """Emits n telemetry events inside a span; returns how many the buffer took."""
        taken = 0
        with telemetry.span("sample.work", {"n": n}):
            for i in range(n):
                taken += telemetry.emit(name, {"i": i, "ratio": i / 2, "label": "x"},
                                        {"pid": os.getpid()})
        return taken


    @tool
    def relay(self, ctx: SessionContext, tool: str, args: dict | None = None,
              pool: str | None = None) -> Any:
        """Call any tool through the host's ExecuteTool (another pool's, or a host tool)."""
        return ctx.call_tool(tool, args, pool=pool)

    @tool
    def host_tool_specs(self, ctx: SessionContext) -> dict:
        """What ctx.host_tools lists for this call's session."""
        return ctx.host_tools


class LeakyAdapter(Adapter):
    """Keeps 1 MiB of every call alive: RSS grows ~100 MiB per 100 requests."""

    def initialize(self) -> None:
        self.kept: list[bytearray] = []

    @tool
    def leak(self) -> int:
        block = bytearray(1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1  # touch every page so it counts in RSS
        self.kept.append(block)
        return len(self.kept)


class CleanupMarker(Adapter):
    """Writes a file from cleanup(), so a test can see that shutdown ran it."""

    @tool
    def mark_on_cleanup(self, path: str) -> None:
        self.path = path

    def cleanup(self) -> None:
        with open(self.path, "w") as fh:
            fh.write(str(os.getpid()))


class IgnoresTerm(Adapter):
    """Survives SIGTERM (only SIGKILL ends it). Each worker leaves its pid in
    $PIT_TEST_TERM_DIR; on SIGTERM it appends to term.log there a JSON line with its pid and
    how many of those workers were alive at that moment."""

    def initialize(self) -> None:
        import signal

        self.folder = os.environ["PIT_TEST_TERM_DIR"]
        with open(os.path.join(self.folder, f"{os.getpid()}.pid"), "w"):
            pass
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum: int, frame: Any) -> None:
        import json

        import psutil

        alive = 0
        for name in os.listdir(self.folder):
            if name.endswith(".pid"):
                try:
                    alive += psutil.Process(int(name[:-4])).status() != psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    pass
        with open(os.path.join(self.folder, "term.log"), "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "alive": alive}) + "\n")

    @tool
    def ping(self) -> int:
        return os.getpid()


class FailingInit(Adapter):
    def initialize(self) -> None:
        raise RuntimeError("model weights missing")

    @tool
    def ping(self) -> str:
        return "never"


class ThreadedAdapter(Adapter):
    """thread_safe: sleeps run concurrently; `serial` (thread_sensitive) never overlaps."""

    thread_safe = True

    def initialize(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.serial_active = 0
        self.serial_overlaps = 0

    @tool
    def nap(self, ms: float) -> dict:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(ms / 1000)
        with self.lock:
            self.active -= 1
        return {"peak": self.peak}

    @tool(thread_sensitive=True)
    def serial(self, ms: float) -> int:
        self.serial_active += 1
        if self.serial_active > 1:
            self.serial_overlaps += 1
        time.sleep(ms / 1000)
        self.serial_active -= 1
        return self.serial_overlaps

    @tool
    def peak(self) -> int:
        return self.peak


class NotForkSafe(Adapter):
    """Declares that it must not be forked: the pool spawns its workers."""

    fork_safe = False

    @tool
    def parent(self) -> int:
        return os.getppid()


class Preloaded(Adapter):
    """preload() runs once in the fork server; workers find its work done."""

    loaded_in: int = 0

    @classmethod
    def preload(cls) -> None:
        cls.loaded_in = os.getpid()

    @tool
    def where(self) -> dict:
        return {"loaded_in": type(self).loaded_in, "pid": os.getpid(), "ppid": os.getppid()}


class CrashingPreload(Adapter):
    """Segfaults in the fork server, while it preloads for the workers it will fork."""

    @classmethod
    def preload(cls) -> None:
        import ctypes

        ctypes.string_at(0)

    @tool
    def ping(self) -> str:
        return "pong"


class SlowInit(Adapter):
    """initialize() takes PIT_TEST_INIT_S seconds (a model being loaded)."""

    def initialize(self) -> None:
        time.sleep(float(os.environ.get("PIT_TEST_INIT_S", "1")))

    @tool
    def ping(self) -> int:
        return os.getpid()


class Configured(Adapter):
    """Takes the pool's adapter_args in initialize()."""

    def initialize(self, greeting: str = "hello", scale: int = 1) -> None:
        self.greeting, self.scale = greeting, scale

    @tool
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}"

    @tool
    def scaled(self, x: int) -> int:
        return x * self.scale


class ArrowTools(Adapter):
    """Arrow tables and DataFrames as arguments and results."""

    @tool
    def describe(self, table: Any) -> dict:
        return {"type": type(table).__name__, "rows": table.num_rows,
                "columns": table.column_names}

    @tool
    def add_column(self, table: Any) -> Any:
        import pyarrow.compute as pc

        return table.append_column("total", pc.add(table["a"], table["b"]))

    @tool
    def keep(self, table: Any) -> int:
        """Keeps the table past the call (its arena must not change under it)."""
        self.kept = table
        return table.num_rows

    @tool
    def kept_sum(self) -> float:
        import pyarrow.compute as pc

        return pc.sum(self.kept["a"]).as_py()

    @tool
    def frame_mean(self, df: Any) -> Any:
        """Gets a DataFrame (through Arrow), returns one."""
        return df.mean().to_frame("mean")
