"""The result converter itself (runtime/protocol/graceful.py, through codec.dumps_result), the
pool keys that set it and the worker flags they become."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

import runtime
from runtime.config import make_pool_config
from runtime.errors import ConfigError
from runtime.pool.transport import snakepit_env
from runtime.pool.worker_process import result_flags
from runtime.protocol import codec, graceful
from runtime.worker.main import parse_args, result_policy

GRACEFUL = graceful.ResultPolicy()


def encode(value: Any, policy: graceful.ResultPolicy = GRACEFUL) -> Any:
    return orjson.loads(codec.dumps_result(value, "t", policy=policy))


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(token='abcdefghijklmnop', password='hunter2')"


class Hooks:
    """Every hook: the first in the documented order wins."""

    def model_dump(self) -> str:
        return "model_dump"

    def to_dict(self) -> str:
        return "to_dict"

    def tolist(self) -> str:
        return "tolist"

    def isoformat(self) -> str:
        return "isoformat"


class Failing:
    """Each hook raises but isoformat: a failing hook falls through to the next."""

    def model_dump(self) -> Any:
        raise ValueError("no")

    def to_dict(self) -> Any:
        raise KeyError("no")

    def _asdict(self) -> Any:
        raise TypeError("no")

    def tolist(self) -> Any:
        raise MemoryError

    def isoformat(self) -> str:
        return "fell through"


class Itself:
    def to_dict(self) -> Any:
        return self  # handing back itself must not loop


class Sparse:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.nnz = 1
        self.calls = 0

    def tolist(self) -> list[int]:
        self.calls += 1
        return [0] * min(self.shape[0], 10)


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Row:
    n: int
    tags: set[str]


def test_each_kind_of_value_is_converted() -> None:
    point = collections.namedtuple("point", "x y")
    value = {"hooks": Hooks(), "failing": Failing(), "nt": point(1, 2), "row": Row(1, {"b", "a"}),
             "set": {3, 1, 2}, "frozen": frozenset({"z"}), "mixed_set": {1, "a"},
             "dec": Decimal("0.1"), "uuid": uuid.UUID(int=255), "path": Path("/a/b"),
             "enum": Color.RED, "bytes": [b"hi", bytearray(b"\x00"), memoryview(b"\xff")],
             "date": datetime.date(2024, 5, 6)}
    out = encode(value)
    assert out["hooks"] == "model_dump" and out["failing"] == "fell through"
    assert out["nt"] == {"x": 1, "y": 2} and out["row"] == {"n": 1, "tags": ["a", "b"]}
    assert out["set"] == [1, 2, 3] and out["frozen"] == ["z"]
    assert sorted(out["mixed_set"], key=str) == [1, "a"]  # unsortable: listed as it came
    assert out["dec"] == "0.1" and out["uuid"] == "00000000-0000-0000-0000-0000000000ff"
    assert out["path"] == "/a/b" and out["enum"] == "red" and out["date"] == "2024-05-06"
    assert out["bytes"] == ["aGk=", "AA==", "/w=="]
    assert encode(Itself()) == {"__ffi_unserializable__": True,
                                "__type__": f"{__name__}.Itself"}


def test_numpy_values_and_the_tolist_guard() -> None:
    np = pytest.importorskip("numpy")
    assert encode({"s": np.float64(2.5), "a": np.arange(4)[::2]}) == {"s": 2.5, "a": [0, 2]}
    small = np.zeros((3, 3))[:, :2]  # not contiguous: tolist, guarded by its size
    assert encode(small) == [[0.0, 0.0]] * 3
    capped = graceful.ResultPolicy(tolist_max_elements=5)
    assert graceful.is_unserializable(encode(small, capped))


def test_a_huge_sparse_matrix_is_not_expanded_and_its_tolist_never_runs() -> None:
    huge = Sparse((10_000, 10_000))  # 10**8 dense elements, though it stores one
    out = encode({"m": huge})
    assert out == {"m": {"__ffi_unserializable__": True, "__type__": f"{__name__}.Sparse"}}
    assert huge.calls == 0
    small = Sparse((3, 3))
    assert encode(small) == [0, 0, 0] and small.calls == 1


def test_markers_and_their_detail_policies() -> None:
    typ = f"{__name__}.Opaque"
    assert encode([Opaque()]) == [{"__ffi_unserializable__": True, "__type__": typ}]
    policies = {
        "type": f"<unserializable {typ}>",
        "repr_truncated": "Opaque(token='abcdefghijklmnop', password='hunter2')",
        "repr_redacted_truncated": "Opaque(token=***, password=***)",
    }
    for detail, shown in policies.items():
        assert encode(Opaque(), graceful.ResultPolicy(detail=detail))["__repr__"] == shown
    capped = graceful.ResultPolicy(detail="repr_truncated", repr_maxlen=6)
    assert encode(Opaque(), capped)["__repr__"] == "Opaque"
    assert encode(Opaque(), graceful.ResultPolicy(detail="repr_truncated", repr_maxlen=0))[
        "__repr__"] == ""


def test_is_unserializable_tells_a_marker_apart() -> None:
    assert runtime.is_unserializable({"__ffi_unserializable__": True, "__type__": "x.Y"})
    for other in ({"__ffi_unserializable__": 1}, {"a": 1}, [], None, "x"):
        assert not runtime.is_unserializable(other)


def test_markers_are_reported_per_type_and_plain_results_never_reach_the_hook(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, int]]] = []
    policy = graceful.ResultPolicy(report=lambda tool, counts: seen.append((tool, counts)))
    codec.dumps_result([Opaque(), Opaque(), {"x": Itself()}, {1}], "t", policy=policy)
    assert seen == [("t", {f"{__name__}.Opaque": 2, f"{__name__}.Itself": 1})]

    def boom(self: Any, obj: Any) -> Any:
        raise AssertionError("the fallback ran for a plain-JSON value")

    monkeypatch.setattr(graceful.Encoder, "default", boom)
    plain = {"a": [1, 2.5, "s", None, True], "b": {"c": datetime.datetime(2024, 1, 1)},
             "d": {"n": 1}, "u": uuid.UUID(int=1), "e": Color.RED}
    assert codec.dumps_result(plain, "t", policy=policy)
    assert seen == [("t", {f"{__name__}.Opaque": 2, f"{__name__}.Itself": 1})]


def test_keys_that_are_not_strings_become_strings_unless_strict() -> None:
    assert encode({1: {2}, "b": Decimal(1)}) == {"1": [2], "b": "1"}
    with pytest.raises(codec.ResultNotEncodable, match="Dict key must be str"):
        codec.dumps_result({1: "a"}, "t")


def test_strict_names_the_type_and_where_it_sits() -> None:
    cases = [
        ({"items": [1, 2, 3, {4}]}, 'dict holding a set at result["items"][3], which is not'),
        ([{"a": (1, Opaque())}], 'list holding a Opaque at result[0]["a"][1], which is not'),
        (Row(1, {"x"}), "Row holding a set at result.tags, which is not JSON"),
        ({"b": b"x"}, 'dict holding a bytes at result["b"], which is not JSON'),
        (Opaque(), "Opaque is not JSON"),
    ]
    for value, why in cases:
        with pytest.raises(codec.ResultNotEncodable) as info:
            codec.dumps_result(value, "t", policy=graceful.STRICT)
        assert f"cannot be encoded: {why}" in str(info.value)


def test_explicit_settings_win_over_snakepit_variables_which_win_over_defaults() -> None:
    env = {graceful.ENV_DETAIL: " Repr_Truncated ", graceful.ENV_REPR_MAXLEN: "9000",
           graceful.ENV_TOLIST_MAX: "7"}
    from_env = graceful.resolve(environ=env)
    assert (from_env.detail, from_env.repr_maxlen, from_env.tolist_max_elements) == (
        "repr_truncated", 2000, 7)  # the repr cap is capped at 2000, as in Snakepit
    explicit = graceful.resolve(detail="type", repr_maxlen=10, tolist_max_elements=0,
                                environ=env)
    assert (explicit.detail, explicit.repr_maxlen, explicit.tolist_max_elements) == (
        "type", 10, 0)
    bad = graceful.resolve(environ={graceful.ENV_DETAIL: "everything",
                                    graceful.ENV_REPR_MAXLEN: "lots",
                                    graceful.ENV_TOLIST_MAX: ""})
    assert (bad.detail, bad.repr_maxlen, bad.tolist_max_elements) == ("none", 500, 1_000_000)
    assert graceful.resolve(environ={}) == graceful.ResultPolicy()


def test_pool_keys_become_worker_flags_and_the_worker_reads_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert result_flags(make_pool_config()) == []  # unset: the worker's environment decides
    cfg = make_pool_config(strict_results=True, unserializable_detail="type",
                           unserializable_repr_maxlen=30, tolist_max_elements=10)
    flags = result_flags(cfg)
    assert flags == ["--strict-results", "--unserializable-detail", "type",
                     "--unserializable-repr-maxlen", "30", "--tolist-max-elements", "10"]
    monkeypatch.setenv(graceful.ENV_DETAIL, "repr_truncated")
    monkeypatch.setenv(graceful.ENV_TOLIST_MAX, "3")
    policy = result_policy(parse_args(["--adapter", "a.b:C", *flags[:3]]))
    assert (policy.strict, policy.detail, policy.tolist_max_elements) == (True, "type", 3)


def test_pool_keys_are_validated() -> None:
    for key, value in (("unserializable_detail", "all"), ("unserializable_repr_maxlen", 2001),
                       ("tolist_max_elements", -1), ("strict_results", "yes")):
        with pytest.raises(ConfigError, match=key):
            make_pool_config(**{key: value})
    with pytest.raises(ConfigError, match="strict_results applies to pit's own worker"):
        make_pool_config(worker="snakepit", command=["python", "grpc_server.py"],
                         strict_results=True)


def test_a_snakepit_bridge_worker_gets_the_pool_keys_as_its_variables(tmp_path: Path) -> None:
    cfg = make_pool_config(worker="snakepit", command=["python", "grpc_server.py"],
                           unserializable_detail="repr_redacted_truncated",
                           tolist_max_elements=5)
    env = snakepit_env(cfg, tmp_path / "ready")
    assert env[graceful.ENV_DETAIL] == "repr_redacted_truncated"
    assert env[graceful.ENV_TOLIST_MAX] == "5" and graceful.ENV_REPR_MAXLEN not in env
