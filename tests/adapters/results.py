"""Tools returning what JSON cannot hold, for the graceful-results tests (runtime/protocol/
graceful.py). Optional libraries (pydantic, numpy, pandas) are imported inside the tools that
need them: the tests skip those whose library is missing."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from runtime.worker import Adapter, tool

Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Box:
    name: str
    size: int


class Opaque:
    """None of the hooks: becomes a marker."""

    def __repr__(self) -> str:
        return "Opaque(api_key='sk-abcdefghijklmnopqrstuvwxyz0123', note='" + "x" * 3000 + "')"


class BrokenModel:
    """model_dump raises: the next hook (to_dict) answers."""

    def model_dump(self) -> dict[str, Any]:
        raise RuntimeError("model_dump is broken")

    def to_dict(self) -> dict[str, Any]:
        return {"from": "to_dict"}


class HugeSparse:
    """A 10**8-element sparse matrix stand-in: its tolist must never run (it would be 800 MB).
    A call to it leaves a file named by $PIT_TEST_TOLIST_MARK, and raises."""

    shape = (10_000, 10_000)
    nnz = 3

    def tolist(self) -> list[Any]:
        mark = os.environ.get("PIT_TEST_TOLIST_MARK")
        if mark:
            Path(mark).write_text("tolist was called")
        raise AssertionError("tolist() of a 10**8-element matrix was called")


class ResultsAdapter(Adapter):
    @tool
    def value(self, kind: str) -> Any:
        """One value of ``kind`` (see KINDS)."""
        return KINDS[kind]()

    @tool
    def mixed(self) -> dict[str, Any]:
        """One value nothing can convert, among good ones."""
        return {"ok": 1, "text": "t", "bad": Opaque(), "list": [1, 2]}

    @tool
    def nested_bad(self) -> dict[str, Any]:
        return {"items": [1, 2, 3, {4, 5}]}

    @tool
    def trivial(self) -> dict[str, Any]:
        return {"ok": True, "n": 1}

    @tool
    def one_bad_field(self) -> dict[str, Any]:
        return {"ok": True, "n": 1, "bad": Opaque()}

    @tool
    def stream_values(self) -> Any:
        yield {"when": datetime.date(2024, 1, 2)}
        yield {"bad": Opaque()}


def _pydantic() -> Any:
    import pydantic

    class User(pydantic.BaseModel):
        name: str
        joined: datetime.date

    return User(name="ada", joined=datetime.date(2024, 1, 2))


def _numpy_scalar() -> Any:
    import numpy as np

    return {"f": np.float32(1.5), "i": np.int64(7), "b": np.bool_(True)}


def _numpy_array() -> Any:
    import numpy as np

    return {"a": np.arange(6).reshape(2, 3).T, "o": np.array([1, "x"], dtype=object)}


def _pandas() -> Any:
    import pandas as pd

    return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})


KINDS: dict[str, Any] = {
    "pydantic": _pydantic,
    "dataclass": lambda: Box("b", 3),
    "namedtuple": lambda: Point(1, 2),
    "set": lambda: {"b", "a", "c"},
    "decimal": lambda: {"price": Decimal("19.99")},
    "uuid_path": lambda: [uuid.UUID(int=1), Path("/tmp/x")],
    "bytes_inside": lambda: {"raw": b"\x00\xffpit"},
    "numpy_scalar": _numpy_scalar,
    "numpy_array": _numpy_array,
    "pandas": _pandas,
    "opaque": Opaque,
    "broken_model": BrokenModel,
    "huge_sparse": HugeSparse,
}
