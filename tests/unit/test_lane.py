from __future__ import annotations

from runtime.pool.lane import batches as _batches
from runtime.protocol import pb


def call(cid: int, size: int) -> pb.LaneCall:
    req = pb.ExecuteToolRequest(tool_name="t")
    req.binary_parameters["data"] = b"x" * size
    return pb.LaneCall(call_id=cid, request=req)


def test_batches_stay_under_the_message_limit() -> None:
    calls = [call(i, 400) for i in range(10)]
    batches = _batches(calls, max_bytes=1000)
    assert [c.call_id for b in batches for c in b] == list(range(10))
    assert all(sum(c.ByteSize() for c in b) <= 1000 for b in batches)
    assert len(batches) == 5
    assert _batches([call(1, 5000)], 1000) == [[call(1, 5000)]]  # one call is never split
