"""`MapPlan`, the pure part of `pool.map`: chunk sizes, per-item errors, the map's deadline."""

from __future__ import annotations

import collections
import time

import pytest

import runtime
from runtime.pool.mapping import FIRST_CHUNK, MAX_CHUNK, TARGET_CHUNK_MS, MapPlan
from runtime.protocol import codec


def plan(n: int | None = 10_000, capacity: int = 2, **kw: object) -> MapPlan:
    items = [{"x": i} for i in range(n or 0)] if n is not None else ({"x": i} for i in range(5))
    options = {"chunksize": None, "return_exceptions": False, "timeout": None, **kw}
    return MapPlan("p", "square", items, capacity, **options)  # type: ignore[arg-type]


def test_chunks_start_small_then_follow_the_measured_cost_per_item() -> None:
    p = plan()
    assert len(p.next_chunk()) == FIRST_CHUNK
    list(p.results(4, {"took_ms": 4 * 0.01, "results": [["ok", 1]] * 4}, None))
    # 0.01 ms an item: TARGET_CHUNK_MS of work is 2000 items, under the 2499 share of 4 slots
    assert len(p.next_chunk()) == int(TARGET_CHUNK_MS / 0.01) == 2000 < MAX_CHUNK


def test_no_chunk_takes_more_than_its_share_while_the_count_is_known() -> None:
    p = plan(n=40, capacity=2)  # 4 chunks in flight at most: 10 items each at most
    p.per_item_ms = 0.0001
    assert len(p.next_chunk()) == 10
    assert plan(n=None).left is None  # a generator: no share to keep


def test_a_fixed_chunksize_and_bad_ones() -> None:
    assert len(plan(chunksize=7).next_chunk()) == 7
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="chunksize must be an int >= 1"):
            plan(chunksize=bad)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        plan(timeout=0)


def test_item_errors_raise_or_are_returned() -> None:
    err = codec.error_payload(ValueError("bad item"), tool_name="square")
    value = {"took_ms": 1.0, "results": [["ok", 1], ["error", err]]}
    got = plan(return_exceptions=True).results(2, value, None)
    first, second = list(got)
    assert first == 1 and isinstance(second, runtime.RemoteError)
    with pytest.raises(runtime.RemoteError, match="bad item"):
        list(plan().results(2, value, None))


def test_a_non_mapping_item_and_a_map_out_of_time() -> None:
    p = MapPlan("p", "square", [{"x": 1}, {"x": 2}, 5], 1, 2, False, None)
    assert p.next_chunk() == [{"x": 1}, {"x": 2}]
    with pytest.raises(TypeError, match="item 2 must be a mapping"):
        p.next_chunk()
    late = plan(timeout=1e-3)
    time.sleep(0.01)
    failed: list[BaseException] = []
    pending: collections.deque = collections.deque()
    late.fill(pending, lambda *a: pytest.fail("no call once out of time"), failed.append)
    assert failed and isinstance(failed[0], runtime.CallTimeout)
