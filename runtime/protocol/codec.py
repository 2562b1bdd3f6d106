"""Python values <-> protobuf messages, per the wire contract (shared/PROTOCOL.md).

- Parameters: each value is an ``Any`` whose ``value`` is JSON (orjson) and whose ``type_url``
  is StringValue's; ``bytes``-like values travel raw in ``binary_parameters``.
- Results: JSON in an ``Any`` whose type_url names the kind (``snakepit.map`` ...); ``bytes``
  results travel raw in ``binary_result``.
- Pickle is never used implicitly: a value wrapped in ``Pickled`` is sent pickled with
  ``metadata["binary_format:<name>"] = "pickle"``, and the receiver unpickles it only when it
  was told to allow pickle.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from collections.abc import Mapping
from typing import Any

import orjson

from . import arrays, arrow, graceful, shm
from . import snakepit_bridge_pb2 as pb

STRING_VALUE_URL = "type.googleapis.com/google.protobuf.StringValue"
RESULT_URL = "type.googleapis.com/snakepit."
BINARY_FORMAT = "binary_format:"
MAP_FLAG = "pit_map"  # request metadata (pit extension): the call is a chunk of pool.map
# request metadata (pit extension): several items may share a chunk (runtime.worker.stream_batch)
STREAM_BATCH = "pit_stream_batch"
STREAM_ITEMS = "pit_items"  # chunk metadata: the data is a JSON array of this many items
# closing-chunk metadata (`final_chunk`): items sent before it, how long the tool ran
FINAL_CHUNKS, FINAL_ELAPSED_MS = "chunks", "elapsed_ms"
RESULT_FORMAT = "result_format"  # pit extension in response metadata: "bytes" | "pickle"
_BYTES_LIKE = (bytes, bytearray, memoryview)


class Pickled:
    """Wrap a value to send it pickled (opt-in; the receiving side must allow pickle)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Pickled({self.value!r})"



def timestamp_now() -> Any:
    """A protobuf Timestamp of now (Ping and Heartbeat answers)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.GetCurrentTime()
    return ts

class CodecError(ValueError):
    """A value that cannot be put on (or taken off) the wire; the message names it."""


class ResultNotEncodable(CodecError):
    """A tool returned a value that cannot be sent back; the message names the tool and the
    type. The host raises it as `runtime.ResultError` (the tool itself did not fail)."""


class ResultTooLarge(CodecError):
    """A tool's encoded result or stream chunk is over the pool's ``max_message_mb``; the
    host raises it as `runtime.ResultTooLarge`."""


RESULT_TYPES = ("return JSON types (dict, list, str, int, float, bool, None), bytes or NumPy "
                "arrays, or wrap the value in runtime.Pickled(...) on a pool with "
                "allow_pickle = true")


def _default(value: Any) -> Any:
    if arrays.is_array(value):  # orjson serializes only C-contiguous arrays natively
        return value.tolist()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _dumps(value: Any) -> bytes:
    # With OPT_SERIALIZE_NUMPY, orjson imports numpy the first time it meets a value it does
    # not know (a set, a Decimal), 0.1-0.7 s and 12-18 MB in a worker that never needed it.
    # A process without numpy imported cannot hold an array, so it asks for no numpy support.
    option = orjson.OPT_SERIALIZE_NUMPY if "numpy" in sys.modules else 0
    return orjson.dumps(value, option=option, default=_default)


def dumps(value: Any, what: str) -> bytes:
    try:
        return _dumps(value)
    except TypeError as exc:
        raise CodecError(
            f"{what} is not JSON-serializable ({type(value).__name__}: {exc}); send JSON data, "
            "bytes, or wrap it in Pickled(...) on a pool with allow_pickle = true"
        ) from None


def dumps_result(value: Any, tool_name: str, did: str = "returned a value",
                 policy: graceful.ResultPolicy = graceful.STRICT) -> bytes:
    """A tool's return value (or what it yielded, says ``did``) as JSON, converting or
    marking what JSON cannot hold as ``policy`` says (`runtime.protocol.graceful`; the
    default is strict). Raises ResultNotEncodable naming the tool, the type that is not JSON
    and where it sits in the value."""
    option = orjson.OPT_SERIALIZE_NUMPY if "numpy" in sys.modules else 0
    if not policy.strict:  # graceful: keys that are not strings (a Series' index) become str
        option |= orjson.OPT_NON_STR_KEYS
    enc = policy.encoder()
    try:
        data = orjson.dumps(value, option=option, default=enc.default)
    except TypeError as exc:
        raise ResultNotEncodable(f"tool {tool_name!r} {did} that cannot be encoded: "
                                 f"{_why(value, exc, enc.failed)}; {RESULT_TYPES}") from None
    if enc.markers and policy.report is not None:
        policy.report(tool_name, enc.markers)
    return data


def _why(value: Any, exc: TypeError, failed: Any) -> str:
    outer = type(value).__name__
    inner = str(exc).removeprefix("Type is not JSON serializable: ")
    if inner == str(exc):  # not a type: "Dict key must be str", a too-large int
        return f"{outer}: {exc}"
    if failed is value or (failed is None and inner == outer):
        return f"{outer} is not JSON"
    where = graceful.locate(value, failed) if failed is not None else None
    return f"{outer} holding a {inner}{' at ' + where if where else ''}, which is not JSON"


def loads(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"{what} is not valid JSON: {exc}") from None


# --- parameters -------------------------------------------------------------------------------

def encode_params(req: Any, args: Mapping[str, Any] | None, *,
                  big: dict[str, Any] | None = None, threshold: int = 0,
                  device_copy: bool = False) -> None:
    """Fill ``req.parameters`` / ``binary_parameters`` / ``metadata`` from ``args``. With a
    ``big`` dict, bytes-like values of ``threshold`` bytes or more go there instead (the
    caller sends them through shared memory, `runtime.pool.shm`). ``device_copy``: a GPU
    array is copied to the CPU instead of refused (`arrays.framed`)."""
    if not args:
        return
    params = req.parameters
    has_binary = "binary_parameters" in req.DESCRIPTOR.fields_by_name
    for name, value in args.items():
        if not isinstance(name, str):
            raise CodecError(f"parameter names must be strings, got {name!r}")
        if isinstance(value, (*_BYTES_LIKE, Pickled)) and not has_binary:
            raise CodecError(f"parameter {name!r}: {req.DESCRIPTOR.name} carries JSON only; "
                             "send bytes as a list of ints or a str")
        try:  # a torch/JAX/CuPy array (via DLPack), an Arrow table or DataFrame (IPC)
            value = arrays.framed(value, device_copy) or arrow.encoded(value) or value
        except ValueError as exc:
            raise CodecError(f"parameter {name!r}: {exc}") from None
        raw = arrays.is_array(value) or isinstance(value, (arrays.Framed, arrow.Encoded))
        if big is not None and threshold and (isinstance(value, _BYTES_LIKE) or raw) and \
                raw_size(value) >= threshold:
            big[name] = value  # the caller sends it through shared memory, or `put_inline`
            continue
        if has_binary and raw and (isinstance(value, (arrays.Framed, arrow.Encoded))
                                   or value.nbytes >= arrays.RAW_MIN_BYTES):
            put_inline(req, name, value)  # raw bytes and their layout, not a JSON list
            continue
        if isinstance(value, _BYTES_LIKE):
            req.binary_parameters[name] = bytes(value)
        elif isinstance(value, Pickled):
            req.binary_parameters[name] = pickle.dumps(value.value, protocol=5)
            req.metadata[BINARY_FORMAT + name] = "pickle"
        else:
            slot = params[name]
            slot.type_url = STRING_VALUE_URL
            slot.value = dumps(value, f"parameter {name!r}")


def decode_params(req: Any, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The call's keyword arguments. Raises CodecError naming the offending parameter."""
    out: dict[str, Any] = {}
    for name, anyval in req.parameters.items():
        out[name] = loads(anyval.value, f"parameter {name!r}") if anyval.value else None
    if "binary_parameters" in req.DESCRIPTOR.fields_by_name and req.binary_parameters:
        for name, raw in req.binary_parameters.items():
            fmt = req.metadata.get(BINARY_FORMAT + name)
            if fmt == "pickle":
                if not allow_pickle:
                    raise CodecError(
                        f"parameter {name!r} was sent pickled but this side does not allow "
                        "pickle; set allow_pickle = true on the pool to accept it"
                    )
                out[name] = pickle.loads(raw)
            elif arrays.PARAM + name in req.metadata:
                out[name] = arrays.from_raw(raw, 0, req.metadata[arrays.PARAM + name])
            elif fmt in (None, "", "raw", "bytes"):
                out[name] = raw
            else:
                raise CodecError(f"parameter {name!r} has unknown binary format {fmt!r}")
    for key, spec in req.metadata.items():
        if key.startswith(shm.ARG):
            name = key[len(shm.ARG):]
            try:
                layout = req.metadata.get(arrays.PARAM + name)
                if layout is not None:
                    path, offset, _ = shm.parse(spec)
                    out[name] = arrays.from_raw(_mappings().get(path), offset, layout)
                else:
                    out[name] = _mappings().read(spec)
            except (OSError, ValueError) as exc:
                raise CodecError(f"parameter {key[len(shm.ARG):]!r}: shared memory {spec!r} "
                                 f"cannot be read: {exc}") from None
    return out


_maps: shm.Mappings | None = None


def _mappings() -> shm.Mappings:
    global _maps
    if _maps is None:
        _maps = shm.Mappings()
    return _maps


def raw_size(value: Any) -> int:
    """Bytes of a bytes-like value or a NumPy array."""
    return int(value.nbytes) if hasattr(value, "nbytes") else len(value)


def raw_parts(value: Any) -> tuple[Any, str | None]:
    """(raw data: bytes-like or an `arrow.Encoded` stream, array layout or None) of a value
    `encode_params` put in ``big``."""
    if arrays.is_array(value) or isinstance(value, arrays.Framed):
        return arrays.to_raw(value)
    if isinstance(value, arrow.Encoded):
        return value.raw()
    if isinstance(value, memoryview):
        return value.cast("B"), None
    return value, None


def put_inline(req: Any, name: str, value: Any) -> None:
    """Send a ``big`` value inside the request (the worker cannot map shared memory)."""
    data, layout = raw_parts(value)
    req.binary_parameters[name] = arrow.to_bytes(data)
    if layout is not None:
        req.metadata[arrays.PARAM + name] = layout


# --- results ----------------------------------------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    return "map"


def encode_result(resp: Any, value: Any, *, allow_pickle: bool = False,
                  shm_out: str | None = None, raw_arrays_from: int = 0,
                  tool_name: str = "", policy: graceful.ResultPolicy = graceful.STRICT) -> None:
    """Put a tool's return value into an ExecuteToolResponse-shaped message; bytes go into the
    shared-memory arena ``shm_out`` (offered by the host) when they fit. NumPy arrays of
    ``raw_arrays_from`` bytes or more (0: never) go raw (`runtime.protocol.arrays`).
    ``policy``: what becomes of values JSON cannot hold (`dumps_result`).
    Raises ResultNotEncodable for a value that cannot be sent."""
    try:  # a torch/JAX/CuPy array (via DLPack), an Arrow table or DataFrame: raw, any size
        special = arrays.framed(value, policy.device_copy) or arrow.encoded(value)
    except ValueError as exc:
        raise ResultNotEncodable(f"tool {tool_name!r} returned {exc}") from None
    if special is not None or (raw_arrays_from and arrays.is_array(value)
                               and value.nbytes >= raw_arrays_from):
        data, layout = raw_parts(special or value)
        resp.metadata[arrays.RESULT] = layout
        ref = _mappings().write(shm_out, data) if shm_out else None
        if ref is not None:
            resp.metadata[shm.RESULT] = ref
        else:
            resp.binary_result = arrow.to_bytes(data)
            resp.metadata[RESULT_FORMAT] = "ndarray"
        resp.success = True
        return
    if shm_out and isinstance(value, _BYTES_LIKE):
        ref = _mappings().write(shm_out, value)
        if ref is not None:
            resp.metadata[shm.RESULT] = ref
            resp.metadata[RESULT_FORMAT] = "bytes"
            resp.success = True
            return
    if isinstance(value, _BYTES_LIKE):
        resp.binary_result = bytes(value)
        resp.metadata[RESULT_FORMAT] = "bytes"
    elif isinstance(value, Pickled):
        if not allow_pickle:
            raise ResultNotEncodable(f"tool {tool_name!r} returned Pickled(...) but the pool "
                                     "does not allow pickle; set allow_pickle = true on it")
        resp.binary_result = pickle.dumps(value.value, protocol=5)
        resp.metadata[RESULT_FORMAT] = "pickle"
    else:
        resp.result.type_url = RESULT_URL + _kind(value)
        resp.result.value = dumps_result(value, tool_name, policy=policy)
    resp.success = True


def decode_result(resp: Any, *, allow_pickle: bool = False) -> Any:
    fmt = resp.metadata.get(RESULT_FORMAT) if resp.metadata else None
    if fmt == "pickle":
        if not allow_pickle:
            raise CodecError("the worker sent a pickled result but this pool does not allow pickle")
        return pickle.loads(resp.binary_result)
    if fmt == "ndarray":
        try:
            return arrays.from_raw(resp.binary_result, 0, resp.metadata[arrays.RESULT])
        except (KeyError, ValueError) as exc:
            raise CodecError(f"the worker's array result cannot be read: {exc}") from None
    if fmt == "bytes" or (resp.binary_result and not resp.result.value):
        return resp.binary_result
    if not resp.result.value:
        return None
    return loads(resp.result.value, "the tool's result")


# --- errors -----------------------------------------------------------------------------------

def encode_error(
    exc: BaseException,
    *,
    tool_name: str,
    session_id: str = "",
    category: str | None = None,
) -> str:
    """The JSON error payload of a failed call (``type``, ``message``, ``traceback`` ...)."""
    return orjson.dumps(error_payload(exc, tool_name=tool_name, session_id=session_id,
                                      category=category)).decode()


def error_payload(exc: BaseException, *, tool_name: str, session_id: str = "",
                  category: str | None = None) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    payload = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": tb,
        "stacktrace": tb.splitlines(),
        "context": {"tool_name": tool_name, "session_id": session_id},
    }
    if category:
        payload["category"] = category  # pit extension; Snakepit peers ignore it
    return payload


def decode_error(text: str) -> dict[str, Any]:
    """Parse an error payload; a peer's plain-text error becomes ``{"message": text}``."""
    try:
        data = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"type": "Error", "message": text}
    return data if isinstance(data, dict) else {"type": "Error", "message": text}


# --- streaming chunks -------------------------------------------------------------------------

def encode_chunk(value: Any, tool_name: str, n: int, *, final: bool = False,
                 policy: graceful.ResultPolicy = graceful.STRICT) -> Any:
    if isinstance(value, _BYTES_LIKE):
        data, fmt = bytes(value), "bytes"
    else:
        data, fmt = dumps_result(value, tool_name, f"yielded a value (chunk {n})", policy), None
    chunk = pb.ToolChunk(chunk_id=f"{tool_name}-{n}", data=data, is_final=final)
    if fmt:
        chunk.metadata[RESULT_FORMAT] = fmt
    return chunk


def final_chunk(tool_name: str, n: int, elapsed_ms: float | None = None) -> Any:
    """The empty closing chunk appended when a tool did not mark one final: its metadata says
    how many chunks came before (``chunks``) and, given ``elapsed_ms``, how long the tool ran
    (the host hands both to the caller as the stream's ``summary``)."""
    chunk = pb.ToolChunk(chunk_id=f"{tool_name}-{n}", is_final=True)
    chunk.metadata["empty"] = "true"
    chunk.metadata[FINAL_CHUNKS] = str(n - 1)
    if elapsed_ms is not None:
        chunk.metadata[FINAL_ELAPSED_MS] = f"{elapsed_ms:.3f}"
    return chunk


def decode_chunk(chunk: Any) -> Any:
    if chunk.metadata and chunk.metadata.get(RESULT_FORMAT) == "bytes":
        return chunk.data
    if not chunk.data:
        return None
    try:
        return orjson.loads(chunk.data)
    except orjson.JSONDecodeError:
        return chunk.data.decode("utf-8", "replace")  # a peer may send raw UTF-8 text
