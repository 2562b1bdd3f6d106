from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from runtime.protocol import codec, pb


def roundtrip_params(args: dict, allow_pickle: bool = False) -> dict:
    req = pb.ExecuteToolRequest(tool_name="t")
    codec.encode_params(req, args)
    wire = pb.ExecuteToolRequest.FromString(req.SerializeToString())
    return codec.decode_params(wire, allow_pickle=allow_pickle)


def test_params_are_json_in_any_with_string_value_type_url() -> None:
    req = pb.ExecuteToolRequest(tool_name="t")
    codec.encode_params(req, {"s": "hi", "n": 3})
    assert req.parameters["s"].type_url == "type.googleapis.com/google.protobuf.StringValue"
    assert req.parameters["s"].value == b'"hi"'
    assert req.parameters["n"].value == b"3"


def test_values_roundtrip_and_ints_stay_ints() -> None:
    args = {"i": 2**40, "f": 1.0, "s": "ü", "l": [1, [2]], "d": {"a": None}, "b": False}
    out = roundtrip_params(args)
    assert out == args and isinstance(out["i"], int) and isinstance(out["f"], float)


def test_bytes_travel_in_binary_parameters_not_json() -> None:
    req = pb.ExecuteToolRequest()
    codec.encode_params(req, {"data": b"\x00\x01", "view": memoryview(b"xy")})
    assert dict(req.binary_parameters) == {"data": b"\x00\x01", "view": b"xy"}
    assert "data" not in req.parameters
    assert roundtrip_params({"data": bytearray(b"z")}) == {"data": b"z"}


def test_pickle_only_when_allowed() -> None:
    req = pb.ExecuteToolRequest()
    codec.encode_params(req, {"obj": codec.Pickled({1, 2})})
    assert req.metadata["binary_format:obj"] == "pickle"
    with pytest.raises(codec.CodecError, match="allow_pickle"):
        codec.decode_params(req)
    assert codec.decode_params(req, allow_pickle=True) == {"obj": {1, 2}}


def test_a_worker_accepts_any_type_url() -> None:
    req = pb.ExecuteToolRequest()
    req.parameters["x"].type_url = "type.googleapis.com/whatever"
    req.parameters["x"].value = b"[1,2]"
    assert codec.decode_params(req) == {"x": [1, 2]}


def test_unencodable_value_names_the_parameter() -> None:
    with pytest.raises(codec.CodecError, match="parameter 'x' is not JSON-serializable"):
        codec.encode_params(pb.ExecuteToolRequest(), {"x": object()})


@pytest.mark.parametrize("value, kind", [
    ({"a": 1}, "map"), ([1], "list"), ((1,), "list"), ("s", "string"), (3, "integer"),
    (1.5, "float"), (True, "boolean"), (None, "null"),
])
def test_result_kinds(value: object, kind: str) -> None:
    resp = pb.ExecuteToolResponse()
    codec.encode_result(resp, value)
    assert resp.success and resp.result.type_url == f"type.googleapis.com/snakepit.{kind}"
    decoded = codec.decode_result(pb.ExecuteToolResponse.FromString(resp.SerializeToString()))
    assert decoded == (list(value) if isinstance(value, tuple) else value)


def test_bytes_result_uses_binary_result() -> None:
    resp = pb.ExecuteToolResponse()
    codec.encode_result(resp, b"")
    assert codec.decode_result(resp) == b""
    codec.encode_result(resp := pb.ExecuteToolResponse(), b"abc")
    assert resp.binary_result == b"abc" and codec.decode_result(resp) == b"abc"


def test_error_payload_shape() -> None:
    try:
        raise ValueError("bad")
    except ValueError as exc:
        text = codec.encode_error(exc, tool_name="t", session_id="s", category="remote_error")
    data = orjson.loads(text)
    assert data["type"] == "ValueError" and data["message"] == "bad"
    assert "raise ValueError" in data["traceback"] and data["stacktrace"]
    assert data["context"] == {"tool_name": "t", "session_id": "s"}
    assert codec.decode_error("plain text") == {"type": "Error", "message": "plain text"}


def test_chunks() -> None:
    chunk = codec.encode_chunk({"i": 1}, "count", 1)
    assert chunk.chunk_id == "count-1" and not chunk.is_final
    assert codec.decode_chunk(chunk) == {"i": 1}
    assert codec.decode_chunk(codec.encode_chunk(b"\x00", "t", 2)) == b"\x00"
    final = codec.final_chunk("count", 3)
    assert final.is_final and final.chunk_id == "count-3" and not final.data
    raw = pb.ToolChunk(data=b"plain text")
    assert codec.decode_chunk(raw) == "plain text"


_NO_NUMPY_UNTIL_AN_ARRAY = """
import sys
from decimal import Decimal
from runtime.protocol import codec, pb
assert "numpy" not in sys.modules, "importing the codec imported numpy"
for value in ({1, 2}, Decimal(1), object()):
    try:
        codec.encode_result(pb.ExecuteToolResponse(), value)
    except codec.CodecError:
        pass
    else:
        raise AssertionError(f"{value!r} encoded")
assert "numpy" not in sys.modules, "a non-JSON result imported numpy"
import numpy as np
assert codec.dumps(np.arange(3), "x") == b"[0,1,2]"
assert codec.dumps({"a": np.arange(6).reshape(2, 3).T, "n": np.int64(5)}, "x") == (
    b'{"a":[[0,3],[1,4],[2,5]],"n":5}')
print("ok")
"""


def test_a_non_json_value_does_not_import_numpy_and_arrays_still_encode() -> None:
    # A fresh interpreter: this test process may have imported numpy already.
    done = subprocess.run([sys.executable, "-c", _NO_NUMPY_UNTIL_AN_ARRAY],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("value, why", [
    ({1, 2}, "set is not JSON"),
    ({"a": [1, {2}]}, "dict holding a set at result[\"a\"][1], which is not JSON"),
    ({1: "a", (2,): "b"}, "dict: Dict key must be str"),
])
def test_a_result_that_cannot_be_encoded_names_the_tool_and_the_type(value: object,
                                                                     why: str) -> None:
    resp = pb.ExecuteToolResponse()
    with pytest.raises(codec.ResultNotEncodable) as info:
        codec.encode_result(resp, value, tool_name="t")
    assert str(info.value).startswith(f"tool 't' returned a value that cannot be encoded: {why}")
    with pytest.raises(codec.ResultNotEncodable, match=r"tool 't' yielded a value \(chunk 3\)"):
        codec.encode_chunk(value, "t", 3)
