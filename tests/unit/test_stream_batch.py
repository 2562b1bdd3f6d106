"""How a batched stream's items are cut into chunks (runtime.worker.stream_batch.chunks)."""

from __future__ import annotations

import orjson

from runtime.protocol import codec
from runtime.worker import stream_batch


def _decoded(chunks: list) -> list:
    out: list = []
    for c in chunks:
        if c.metadata.get(codec.STREAM_ITEMS):
            items = orjson.loads(c.data)
            assert len(items) == int(c.metadata[codec.STREAM_ITEMS])
            out.extend(items)
        else:
            out.append(codec.decode_chunk(c))
    return out


def test_json_runs_share_a_chunk_and_bytes_go_alone_in_order() -> None:
    ready = [(b"1", False), (b'{"a":2}', False), (b"raw", True), (b'"x"', False)]
    chunks = list(stream_batch.chunks(ready, "t", 5))
    assert [c.chunk_id for c in chunks] == ["t-5", "t-7", "t-8"]
    assert _decoded(chunks) == [1, {"a": 2}, b"raw", "x"]


def test_a_run_is_cut_at_max_items() -> None:
    n = stream_batch.MAX_ITEMS + 3
    chunks = list(stream_batch.chunks([(b"0", False)] * n, "t", 1))
    assert [c.metadata[codec.STREAM_ITEMS] for c in chunks] == [
        str(stream_batch.MAX_ITEMS), "3"]
    assert chunks[1].chunk_id == f"t-{stream_batch.MAX_ITEMS + 1}"
