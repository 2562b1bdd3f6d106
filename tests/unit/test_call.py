"""`pool.call.answer`: a worker's response -> (value, None) or (None, the PitError it means)."""

from __future__ import annotations

from types import SimpleNamespace

import runtime
from runtime.pool.call import answer
from runtime.protocol import codec, pb


def test_a_result_the_host_cannot_read_is_a_result_error_not_the_callers() -> None:
    # Stand-ins for the pool and the worker: answer() only reads these attributes.
    pool = SimpleNamespace(name="p", barrier=SimpleNamespace(
        breaker=SimpleNamespace(record_success=lambda: None)))
    channel = SimpleNamespace(read_result=lambda resp: (codec.decode_result(resp), None),
                              note_result=lambda tool, size: None)
    worker = SimpleNamespace(id="worker-1", errors=0, channel=channel)
    resp = pb.ExecuteToolResponse(success=True, binary_result=b"\x80")
    resp.metadata[codec.RESULT_FORMAT] = "pickle"  # this pool does not allow pickle
    req = pb.ExecuteToolRequest(tool_name="t")
    value, err = answer(pool, worker, req, resp)  # type: ignore[arg-type]
    assert value is None and type(err) is runtime.ResultError
    assert str(err).startswith("the result of tool 't' cannot be read: the worker sent a "
                               "pickled result")
    assert err.details == {"tool": "t", "pool": "p", "worker": "worker-1"}
