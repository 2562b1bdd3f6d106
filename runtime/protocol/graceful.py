"""Graceful results: what a tool returns that JSON cannot hold is converted, or marked.

orjson serializes JSON types, dataclasses, datetimes, UUIDs, enums and (once numpy is
imported) contiguous NumPy arrays and scalars itself; only what it does not know reaches
`Encoder.default`, so a plain-JSON result never pays for any of this. There, in order:

1. ``model_dump()`` (Pydantic), ``to_dict()`` (many API clients; a pandas DataFrame's
   ``to_dict("records")``), ``_asdict()``
   (namedtuples), a dataclass's fields;
2. ``tolist()`` (NumPy arrays orjson cannot take, sparse matrices, tensors) unless the dense
   size, read from ``.shape`` (else ``.size``) *before* calling it, exceeds
   ``tolist_max_elements``;
3. ``isoformat()``; sets and frozensets as lists (sorted when their items sort); ``Decimal``
   as its exact string; ``UUID`` and ``Path`` as strings; an ``Enum`` as its value.

Bytes-like values inside a structure (first: a memoryview has a ``tolist``) become standard
base64 strings, protobuf's JSON mapping of ``bytes``; a tool's top-level bytes still travel
raw, and come back as bytes.

A hook that raises, or hands back the object itself, falls through to the next. What is left
becomes a marker, Snakepit's: ``{"__ffi_unserializable__": true, "__type__":
"module.Qualname"}``, plus ``"__repr__"`` as the detail policy says (`DETAILS`). With
``strict`` nothing is converted: the call fails as before, naming the type and where it sits
(``result["items"][3]``).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import os
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from . import arrays

MARKER_KEY = "__ffi_unserializable__"
TYPE_KEY = "__type__"
REPR_KEY = "__repr__"
DETAILS = ("none", "type", "repr_truncated", "repr_redacted_truncated")
REPR_MAXLEN_DEFAULT = 500
REPR_MAXLEN_MAX = 2000
TOLIST_MAX_ELEMENTS_DEFAULT = 1_000_000
# Snakepit's names, read by the worker when the pool's config does not set the key.
ENV_DETAIL = "SNAKEPIT_UNSERIALIZABLE_DETAIL"
ENV_REPR_MAXLEN = "SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN"
ENV_TOLIST_MAX = "SNAKEPIT_TOLIST_MAX_ELEMENTS"
_BYTES_LIKE = (bytes, bytearray, memoryview)
_HOOKS = ("model_dump", "to_dict", "_asdict")

# (tool name, {marker type: count}) -> None: the worker's telemetry
Reporter = Callable[[str, dict[str, int]], None]


def is_unserializable(value: Any) -> bool:
    """Whether ``value`` is the marker a worker put where a result held something it could
    not convert (``{"__ffi_unserializable__": true, "__type__": ...}``)."""
    return isinstance(value, dict) and value.get(MARKER_KEY) is True


def type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True, slots=True)
class ResultPolicy:
    """How a worker encodes what JSON cannot hold (see the module docstring)."""

    strict: bool = False
    detail: str = "none"
    repr_maxlen: int = REPR_MAXLEN_DEFAULT
    tolist_max_elements: int = TOLIST_MAX_ELEMENTS_DEFAULT
    device_copy: bool = False  # a GPU array result is copied to the CPU (allow_device_copy)
    report: Reporter | None = dataclasses.field(default=None, compare=False)

    def encoder(self) -> Encoder:
        return Encoder(self)

    def marker(self, obj: Any) -> dict[str, Any]:
        name = type_name(obj)
        out: dict[str, Any] = {MARKER_KEY: True, TYPE_KEY: name}
        if self.detail == "type":
            out[REPR_KEY] = f"<unserializable {name}>"
        elif self.detail in ("repr_truncated", "repr_redacted_truncated"):
            try:
                text = repr(obj)
            except Exception:  # noqa: BLE001 - a broken __repr__ must not fail the call
                text = f"<repr failed for {name}>"
            if not isinstance(text, str):
                text = f"<repr failed for {name}>"
            if self.detail == "repr_redacted_truncated":
                from ..logs import redact_text  # only here: logging costs a plain worker 7 ms

                text = redact_text(text)  # before truncating: half a secret is still one
            out[REPR_KEY] = text[:self.repr_maxlen]
        return out


STRICT = ResultPolicy(strict=True)


def resolve(*, strict: bool = False, detail: str | None = None, repr_maxlen: int | None = None,
            tolist_max_elements: int | None = None, environ: Mapping[str, str] | None = None,
            report: Reporter | None = None, device_copy: bool = False) -> ResultPolicy:
    """The policy from explicit settings (the pool's config), else Snakepit's environment
    variables, else the defaults. A bad environment value falls back to the default, as in
    Snakepit: it must not keep a worker from starting."""
    env = os.environ if environ is None else environ
    if detail is None:
        detail = env.get(ENV_DETAIL, "none").strip().lower()
        if detail not in DETAILS:
            detail = "none"  # Snakepit's answer to an unknown mode: the safest
    if repr_maxlen is None:
        repr_maxlen = _env_int(env, ENV_REPR_MAXLEN, REPR_MAXLEN_DEFAULT)
    if tolist_max_elements is None:
        tolist_max_elements = _env_int(env, ENV_TOLIST_MAX, TOLIST_MAX_ELEMENTS_DEFAULT)
    return ResultPolicy(strict=strict, detail=detail,
                        repr_maxlen=max(0, min(repr_maxlen, REPR_MAXLEN_MAX)),
                        tolist_max_elements=max(0, tolist_max_elements),
                        device_copy=device_copy, report=report)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, "").strip())
    except ValueError:
        return default


def _dense_size(obj: Any) -> int | None:
    """Elements ``obj.tolist()`` would make, when its shape (or size) says; for a sparse
    matrix the shape's product, not the stored values."""
    try:
        shape = getattr(obj, "shape", None)
        if isinstance(shape, tuple):
            n = 1
            for dim in shape:
                n *= int(dim)
            return n
        size = getattr(obj, "size", None)
        return None if size is None or callable(size) else int(size)
    except Exception:  # noqa: BLE001 - a shape we cannot read: no pre-check
        return None


def _is_frame(obj: Any) -> bool:
    # A DataFrame's plain to_dict() is {column: {index: value}}; rows read better.
    cls = type(obj)
    return cls.__name__ == "DataFrame" and cls.__module__.startswith("pandas")


def _sorted_or_listed(items: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(items)  # a set's order changes with hash seeds; sorted, it is stable
    except TypeError:
        return list(items)


class Encoder:
    """orjson's ``default`` for one result; counts the markers it made (``markers``)."""

    __slots__ = ("policy", "markers", "failed")

    def __init__(self, policy: ResultPolicy) -> None:
        self.policy = policy
        self.markers: dict[str, int] | None = None
        self.failed: Any = None  # strict: the object that could not be encoded

    def default(self, obj: Any) -> Any:
        policy = self.policy
        if policy.strict:
            if arrays.is_array(obj):  # what pit always did: orjson takes C-contiguous only
                return obj.tolist()
            self.failed = obj
            raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")
        if isinstance(obj, _BYTES_LIKE):  # before tolist: a memoryview has one (a list of ints)
            return base64.b64encode(obj).decode("ascii")
        for name in _HOOKS:
            hook = getattr(obj, name, None)
            if hook is not None and callable(hook):
                try:
                    out = hook(orient="records") if name == "to_dict" and _is_frame(obj) \
                        else hook()
                except Exception:  # noqa: BLE001 - a hook that fails: try the next way
                    continue
                if out is not obj:
                    return out
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            try:
                return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            except Exception:  # noqa: BLE001
                pass
        tolist = getattr(obj, "tolist", None)
        if tolist is not None and callable(tolist):
            size = _dense_size(obj)
            if size is None or size <= policy.tolist_max_elements:
                try:
                    out = tolist()
                except Exception:  # noqa: BLE001 - MemoryError included
                    out = obj
                if out is not obj:
                    return out
        isoformat = getattr(obj, "isoformat", None)
        if isoformat is not None and callable(isoformat):
            try:
                return isoformat()
            except Exception:  # noqa: BLE001
                pass
        if isinstance(obj, (set, frozenset)):
            return _sorted_or_listed(obj)
        if isinstance(obj, Decimal):
            return str(obj)  # exact; a float would round it
        if isinstance(obj, (uuid.UUID, PurePath)):
            return str(obj)
        if isinstance(obj, enum.Enum):
            return obj.value
        marker = policy.marker(obj)
        if self.markers is None:
            self.markers = {}
        name = marker[TYPE_KEY]
        self.markers[name] = self.markers.get(name, 0) + 1
        return marker


def locate(root: Any, target: Any, limit: int = 100_000) -> str | None:
    """Where ``target`` (by identity) sits in ``root``: ``result["items"][3]``, ``result.field``
    for a dataclass's; None when not found within ``limit`` containers."""
    stack: list[tuple[Any, str]] = [(root, "result")]
    seen = 0
    while stack and seen < limit:
        value, path = stack.pop()
        if value is target:
            return path
        seen += 1
        if isinstance(value, dict):
            children = [(v, f"{path}[{k!r}]" if not isinstance(k, str) else
                         f'{path}["{k}"]') for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            children = [(getattr(value, f.name, None), f"{path}.{f.name}")
                        for f in dataclasses.fields(value)]
        else:
            continue
        stack.extend(reversed(children))  # depth first, in order: the first one is named
    return None
