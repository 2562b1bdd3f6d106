"""pool.map / AsyncPool.map through real workers: order, chunking, per-item errors,
deadlines and cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime import AsyncPool, CallTimeout, InvalidArgument, Pool, RemoteError, telemetry
from tests.conftest import wait_until

SAMPLE = "tests.adapters.sample:SampleAdapter"


@pytest.fixture
def pool():
    with Pool(size=2) as p:
        yield p


def test_map_returns_every_result_in_order(pool: Pool) -> None:
    items = [{"a": i, "b": 1} for i in range(5000)]
    assert list(pool.map("add", items)) == [i + 1 for i in range(5000)]
    assert list(pool.map("add", iter(items[:7]))) == [i + 1 for i in range(7)]  # no len()
    assert list(pool.map("add", [])) == []


def test_unordered_map_returns_the_same_results(pool: Pool) -> None:
    items = [{"ms": (i % 3) * 5} for i in range(30)]
    out = list(pool.map("sleep", items, ordered=False, chunksize=1))
    assert sorted(r["slept_ms"] for r in out) == sorted(i["ms"] for i in items)


def test_fixed_chunksize_sends_one_call_per_chunk(pool: Pool) -> None:
    calls: list[telemetry.Event] = []
    with telemetry.subscribe("pool.call.completed", calls.append):
        assert list(pool.map("add", [{"a": i, "b": 0} for i in range(100)], chunksize=30)) \
            == list(range(100))
    assert len(calls) == 4  # 30 + 30 + 30 + 10


def test_item_errors_raise_or_come_back_with_the_rest(pool: Pool) -> None:
    items = [{"a": 1, "b": 2}, {"a": "x", "b": 2}, {"a": 1}, {"a": 5, "b": 5}]
    out = list(pool.map("add", items, return_exceptions=True))
    assert out[0] == 3 and out[3] == 10
    assert isinstance(out[1], InvalidArgument) and "parameter 'a'" in str(out[1])
    assert isinstance(out[2], InvalidArgument) and "missing required parameter 'b'" in str(
        out[2])
    results = pool.map("fail", [{"message": "boom"}])
    with pytest.raises(RemoteError, match="boom"):
        next(results)
    assert pool.execute("add", {"a": 1, "b": 1}) == 2  # the workers are fine


def test_bad_items_and_arguments_are_named(pool: Pool) -> None:
    with pytest.raises(TypeError, match="item 2 must be a mapping"):
        list(pool.map("add", [{"a": 1, "b": 1}, {"a": 1, "b": 1}, 3], chunksize=1))
    with pytest.raises(ValueError, match="chunksize must be an int >= 1"):
        list(pool.map("add", [], chunksize=0))
    with pytest.raises(InvalidArgument, match="streams its results"):
        list(pool.map("stream_count", [{"n": 1}]))


def test_the_maps_timeout_bounds_the_whole_map(pool: Pool) -> None:
    started = time.monotonic()
    out = list(pool.map("sleep", [{"ms": 100}] * 20, chunksize=1, timeout=0.5,
                        return_exceptions=True))
    assert time.monotonic() - started < 5
    assert any(isinstance(r, dict) for r in out)
    assert isinstance(out[-1], CallTimeout) and len(out) == 20
    with pytest.raises(CallTimeout):
        list(pool.map("sleep", [{"ms": 100}] * 20, chunksize=1, timeout=0.3))


def test_leaving_a_map_early_cancels_what_was_sent(pool: Pool) -> None:
    results = pool.map("sleep", [{"ms": 200}] * 50, chunksize=1)
    assert next(results)["slept_ms"] == 200
    results.close()  # what a `break` out of the loop does
    assert wait_until(lambda: pool.stats().queued == 0 and all(
        w.in_flight == 0 for w in pool.stats().workers), timeout=5)
    assert pool.execute("add", {"a": 2, "b": 2}) == 4


def test_a_worker_crash_fails_only_its_chunk(tmp_path) -> None:  # noqa: ANN001
    with Pool(adapter=SAMPLE, size=2) as pool:
        assert list(pool.map("renamed", [{"x": i} for i in range(6)])) == [
            i * 10 for i in range(6)]
        items = [{"marker": str(tmp_path / f"m{i}")} for i in range(6)]
        for item in items[1:]:  # crash_once survives where its marker exists
            open(item["marker"], "w").close()
        out = list(pool.map("crash_once", items, chunksize=1, return_exceptions=True))
        assert type(out[0]).__name__ == "WorkerExit" and out[1:] == ["survived"] * 5
        assert list(pool.map("crash_once", items[:3])) == ["survived"] * 3


def test_async_map_in_order_and_unordered() -> None:
    async def main() -> tuple[list, list]:
        async with AsyncPool(size=2) as pool:
            items = [{"a": i, "b": 1} for i in range(2000)]
            ordered = [r async for r in pool.map("add", items)]
            loose = [r async for r in pool.map("add", items, ordered=False)]
            errors = [r async for r in pool.map("fail", [{}], return_exceptions=True)]
            assert isinstance(errors[0], RemoteError)
            return ordered, loose

    ordered, loose = asyncio.run(main())
    assert ordered == [i + 1 for i in range(2000)] and sorted(loose) == ordered
