"""Graceful results through real pools (runtime/protocol/graceful.py): what a tool returns that
JSON cannot hold comes back converted, or as Snakepit's marker; strict_results keeps the error
and names where the value sits; the detail policy, the repr cap and the tolist guard come from
the pool's keys, else from Snakepit's environment variables; markers are counted in
telemetry."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest

import runtime
from runtime import Pool, telemetry
from tests.bridge import BRIDGE
from tests.conftest import wait_until

RESULTS = "tests.adapters.results:ResultsAdapter"
OPAQUE = "tests.adapters.results.Opaque"


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture
def pool():
    with Pool(adapter=RESULTS, size=1) as p:
        yield p


CASES: list[tuple[str, Any, str | None]] = [  # (kind, expected, module it needs)
    ("pydantic", {"name": "ada", "joined": "2024-01-02"}, "pydantic"),
    ("dataclass", {"name": "b", "size": 3}, None),
    ("namedtuple", {"x": 1, "y": 2}, None),  # _asdict(): a namedtuple's fields by name
    ("set", ["a", "b", "c"], None),
    ("decimal", {"price": "19.99"}, None),  # exact, as a string
    ("uuid_path", ["00000000-0000-0000-0000-000000000001", "/tmp/x"], None),
    ("bytes_inside", {"raw": "AP9waXQ="}, None),  # base64, protobuf's JSON form of bytes
    ("broken_model", {"from": "to_dict"}, None),  # model_dump raised: the next hook answered
    ("numpy_scalar", {"f": 1.5, "i": 7, "b": True}, "numpy"),
    ("numpy_array", {"a": [[0, 3], [1, 4], [2, 5]], "o": [1, "x"]}, "numpy"),
    # to_dict("records") without pyarrow; with it, the same frame back (through Arrow)
    ("pandas", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], "pandas"),
]


def test_values_json_cannot_hold_come_back_converted(pool: Pool) -> None:
    # One pool for every case (a pool per case would start 11); a missing optional library
    # skips its case only, and the test says which it skipped.
    skipped = []
    for kind, expected, needs in CASES:
        if needs is not None and not has(needs):
            skipped.append(kind)
            continue
        got = pool.execute("value", {"kind": kind})
        if kind == "pandas" and has("pyarrow"):  # a DataFrame itself travels through Arrow
            assert type(got).__name__ == "DataFrame"
            got = got.to_dict("records")
        assert got == expected, kind
    if skipped:
        pytest.skip(f"the rest passed; not installed, so not tried: {', '.join(skipped)}")


def test_what_nothing_converts_is_a_marker_among_the_good_values(pool: Pool) -> None:
    out = pool.execute("mixed")
    assert out["ok"] == 1 and out["text"] == "t" and out["list"] == [1, 2]
    assert out["bad"] == {"__ffi_unserializable__": True, "__type__": OPAQUE}  # detail none
    assert runtime.is_unserializable(out["bad"]) and not runtime.is_unserializable(out)
    assert runtime.is_unserializable(pool.execute("value", {"kind": "opaque"}))
    chunks = list(pool.stream("stream_values"))
    assert chunks[0] == {"when": "2024-01-02"} and runtime.is_unserializable(chunks[1]["bad"])
    [item] = pool.map("mixed", [{}])
    assert runtime.is_unserializable(item["bad"])


def test_a_huge_sparse_matrix_is_marked_without_calling_tolist(tmp_path: Path) -> None:
    mark = tmp_path / "tolist-called"
    with Pool(adapter=RESULTS, size=1, env={"PIT_TEST_TOLIST_MARK": str(mark)}) as pool:
        out = pool.execute("value", {"kind": "huge_sparse"})
    assert out == {"__ffi_unserializable__": True,
                   "__type__": "tests.adapters.results.HugeSparse"}
    assert not mark.exists()


def test_strict_results_fail_naming_the_type_and_the_path() -> None:
    with Pool(adapter=RESULTS, size=1, strict_results=True) as pool:
        with pytest.raises(runtime.ResultError) as info:
            pool.execute("nested_bad")
        assert str(info.value).startswith(
            "tool 'nested_bad' returned a value that cannot be encoded: dict holding a set at "
            'result["items"][3], which is not JSON')
        with pytest.raises(runtime.ResultError, match=r"Opaque at result\[\"bad\"\]"):
            pool.execute("mixed")
        assert pool.execute("trivial") == {"ok": True, "n": 1}  # the worker serves on


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_detail_policy_and_repr_cap_from_the_pool_reach_the_worker(start_method: str) -> None:
    with Pool(adapter=RESULTS, size=1, start_method=start_method,
              unserializable_detail="repr_redacted_truncated",
              unserializable_repr_maxlen=40) as pool:
        bad = pool.execute("mixed")["bad"]
    assert bad["__repr__"] == "Opaque(api_key=***, note='xxxxxxxxxxxxxx"[:40]
    assert len(bad["__repr__"]) == 40 and "sk-" not in bad["__repr__"]


def test_snakepit_environment_variables_apply_unless_the_pool_sets_the_key(
        tmp_path: Path) -> None:
    env = {"SNAKEPIT_UNSERIALIZABLE_DETAIL": "repr_truncated",
           "SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN": "12",
           "SNAKEPIT_TOLIST_MAX_ELEMENTS": "100000000",
           "PIT_TEST_TOLIST_MARK": str(tmp_path / "called")}
    with Pool(adapter=RESULTS, size=1, env=env) as pool:
        assert pool.execute("mixed")["bad"]["__repr__"] == "Opaque(api_k"  # not redacted
        # With the guard raised to 10**8 tolist is tried; it raises, so: a marker.
        assert runtime.is_unserializable(pool.execute("value", {"kind": "huge_sparse"}))
    assert (tmp_path / "called").exists()
    with Pool(adapter=RESULTS, size=1, env=env, unserializable_detail="type") as pool:
        bad = pool.execute("mixed")["bad"]
    assert bad["__repr__"] == f"<unserializable {OPAQUE}>"  # the pool's key wins


def test_markers_are_counted_in_telemetry_with_their_type(pool: Pool) -> None:
    events: list[telemetry.Event] = []
    lock = threading.Lock()

    def add(event: telemetry.Event) -> None:
        with lock:
            events.append(event)

    with telemetry.subscribe("worker.result.unserializable", add):
        pool.execute("mixed")
        pool.execute("trivial")
        assert wait_until(lambda: len(events) >= 1)
    [event] = events
    assert event.measurements["count"] == 1
    assert event.metadata["type"] == OPAQUE and event.metadata["tool"] == "mixed"
    assert event.metadata["pool"] == pool.name and event.metadata["worker"]


@pytest.mark.skipif(not (BRIDGE / "snakepit_bridge" / "base_adapter.py").is_file()
                    or not has("numpy"), reason="Snakepit's Python bridge (or numpy) missing")
def test_the_showcase_serialization_demo_now_succeeds() -> None:
    with Pool(adapter="snakepit_bridge.adapters.showcase.ShowcaseAdapter", size=1,
              env={"PYTHONPATH": str(BRIDGE)}) as pool:
        out = pool.execute("serialization_demo", {"demo_type": "all"})
    custom = out["custom_class_demo"]
    assert runtime.is_unserializable(custom["custom_object"])
    assert custom["custom_object"]["__type__"].endswith("<locals>.CustomResponse")
    assert custom["preserved_string"] == "This is preserved"
    assert out["convertible_demo"] == {"api_response": {"code": 200, "message": "OK"},
                                       "pydantic_like": {"field1": "value1",
                                                         "field2": "value2"}}
    assert isinstance(out["datetime_demo"]["datetime_now"], str)
