"""A tool's exception reaches the caller as a class it can catch by type, over real workers and
real gRPC: ``except KeyError`` catches a tool's KeyError, the worker's traceback is printed as
the cause, and ML failures are read from the message."""

from __future__ import annotations

import asyncio
import pickle
import time
import traceback
from collections.abc import Iterator

import pytest

import runtime
from runtime import AsyncPool, Pool, telemetry
from runtime.errors import remote_class
from runtime.ml_errors import OutOfMemory, ShapeMismatch
from tests.conftest import wait_until

SAMPLE = {"adapter": "tests.adapters.sample:SampleAdapter"}


@pytest.fixture
def pool() -> Iterator[Pool]:
    with Pool(size=1, **SAMPLE) as p:
        yield p


def test_builtin_exceptions_are_caught_by_their_type(pool: Pool) -> None:
    with pytest.raises(ValueError, match="bad value") as info:
        pool.execute("raise_as", {"kind": "ValueError", "message": "bad value"})
    assert isinstance(info.value, runtime.RemoteError)
    assert info.value.remote_type == "ValueError" and info.value.category == "remote_error"
    with pytest.raises(KeyError) as caught:  # the point: `except KeyError` catches it
        pool.execute("raise_as", {"kind": "KeyError", "message": "missing"})
    assert str(caught.value) == "tool 'raise_as' raised KeyError: 'missing'"
    assert isinstance(caught.value, runtime.RemoteError)
    assert caught.value.remote_type == "KeyError"
    with pytest.raises(TimeoutError):
        pool.submit("raise_as", {"kind": "TimeoutError"}).result()
    with pytest.raises(FileNotFoundError):  # an OSError subclass
        list(pool.stream("raise_as", {"kind": "FileNotFoundError"}))
    with pytest.raises(ValueError):
        list(pool.map("raise_as", [{"kind": "ValueError"}]))


def test_a_custom_class_is_a_named_remote_error_and_a_tools_exit_never_a_base_exception(
        pool: Pool) -> None:
    with pytest.raises(runtime.RemoteError) as info:
        pool.execute("raise_as", {"kind": "custom", "message": "over quota"})
    assert type(info.value).__name__ == "QuotaExceeded"
    assert type(info.value) is remote_class("QuotaExceeded")  # one class per name
    with pytest.raises(Exception) as exited:  # noqa: PT011 - the point: not a BaseException
        pool.execute("exit_now")
    assert not isinstance(exited.value, SystemExit)
    assert isinstance(exited.value, runtime.RemoteError)  # the worker reports it as an error


def test_the_workers_traceback_is_printed_as_the_cause(pool: Pool) -> None:
    with pytest.raises(KeyError) as info:
        pool.execute("raise_as", {"kind": "KeyError"})
    printed = "".join(traceback.format_exception(info.value))
    assert "raise getattr(builtins, kind)(message)" in printed  # the worker's source line
    assert "sample.py" in printed
    assert "The above exception was the direct cause of the following exception" in printed
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is type(info.value) and again.remote_traceback == \
        info.value.remote_traceback
    assert "raise getattr(builtins" in "".join(traceback.format_exception(again))


def test_ml_errors_are_parsed_and_counted(pool: Pool) -> None:
    events: list[telemetry.Event] = []
    with telemetry.subscribe("pool.call.tool_error", events.append):
        with pytest.raises(RuntimeError) as info:
            pool.execute("raise_as", {
                "kind": "RuntimeError",
                "message": "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)"})
        assert info.value.ml == ShapeMismatch(((3, 4), (5, 6)), "torch")
        with pytest.raises(MemoryError) as oom:
            pool.execute("raise_as", {
                "kind": "MemoryError",
                "message": "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB "
                           "total capacity; 1.00 GiB free)"})
        assert oom.value.ml == OutOfMemory("cuda:0", 2 << 30, 1 << 30, "torch")
        assert oom.value.to_dict()["ml"]["category"] == "out_of_memory"
        with pytest.raises(ValueError) as plain:
            pool.execute("raise_as", {"kind": "ValueError"})
        assert plain.value.ml is None
        assert wait_until(lambda: len(events) == 3, timeout=5)  # the loop settles direct calls
    assert [(e.measurements["mapped"], e.metadata["ml_category"]) for e in events] == [
        (1, "shape_mismatch"), (1, "out_of_memory"), (0, "")]
    assert {e.metadata["pool"] for e in events} == {pool.name}


def test_a_worker_that_dies_of_cuda_oom_keeps_its_crash_cause(pool: Pool) -> None:
    events: list[telemetry.Event] = []
    with telemetry.subscribe("pool.call.tool_error", events.append):
        with pytest.raises(runtime.WorkerExit) as info:
            pool.execute("die_of_cuda_oom")
        time.sleep(0.2)  # what the loop would emit for it
    assert not isinstance(info.value, runtime.RemoteError)
    assert info.value.details["cause"] == "gpu" and not events  # a crash, not a tool error


def test_async_pool_raises_the_same_classes() -> None:
    async def main() -> None:
        async with AsyncPool(size=1, **SAMPLE) as ap:
            with pytest.raises(KeyError):
                await ap.execute("raise_as", {"kind": "KeyError"})
            with pytest.raises(TimeoutError) as info:
                await asyncio.gather(ap.execute("raise_as", {"kind": "TimeoutError"}))
            assert not isinstance(info.value, runtime.CallTimeout)
            assert isinstance(info.value, runtime.RemoteError)

    asyncio.run(main())
