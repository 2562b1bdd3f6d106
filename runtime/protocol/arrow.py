"""Arrow tables (and pandas DataFrames, through Arrow) as Arrow IPC streams (pit extension).

A `pyarrow.Table` or `RecordBatch` argument or result travels as the bytes of one IPC stream,
with the layout ``{"arrow": "table" | "batch" | "pandas"}`` where `arrays` keeps a NumPy
layout (request metadata ``pit_np:<param>``, response ``pit_np_result``): inside the message,
or through the shared-memory arenas from the pool's ``shm_threshold_kb``. The receiver reads
the stream in place: the table's buffers are the message's (or the arena's, leased as NumPy
views are) bytes, not a copy. A pandas DataFrame goes through Arrow when pyarrow is installed
on the sending side and comes back as a DataFrame. pyarrow is never imported here unless an
Arrow value is actually sent or received.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

KINDS = ("table", "batch", "pandas")


@dataclass(frozen=True, slots=True)
class Encoded:
    """An Arrow value as its IPC stream, ready to travel like raw bytes."""

    data: Any  # a pyarrow Buffer
    kind: str

    @property
    def nbytes(self) -> int:
        return int(self.data.size)

    def raw(self) -> tuple[memoryview, str]:
        """(the stream's bytes, the layout that names it Arrow)."""
        return memoryview(self.data), json.dumps({"arrow": self.kind, "size": self.nbytes})


def encoded(value: Any) -> Encoded | None:
    """``value`` as an `Encoded` IPC stream when it travels as Arrow; None otherwise."""
    kind = kind_of(value)
    return None if kind is None else Encoded(to_ipc(value, kind), kind)


def kind_of(value: Any) -> str | None:
    """"table", "batch" or "pandas" for a value that travels as Arrow IPC; None otherwise."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        if isinstance(value, pa.Table):
            return "table"
        if isinstance(value, pa.RecordBatch):
            return "batch"
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.DataFrame) and _has_pyarrow():
        return "pandas"
    return None


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def to_ipc(value: Any, kind: str) -> Any:
    """The IPC stream of ``value`` (a pyarrow Buffer: bytes-like, no copy to read it)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(value, preserve_index=True) if kind == "pandas" else value
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return sink.getvalue()


def from_ipc(buffer: Any, offset: int, kind: str, size: int, copy: bool = True) -> Any:
    """The table (batch, DataFrame) whose IPC stream (``size`` bytes) starts at ``offset`` of
    ``buffer``.
    Without ``copy`` (or when ``buffer`` is immutable bytes) its columns are views over
    ``buffer``, which they keep alive; with it, over a copy of just the stream (an arena the
    sender reuses after the call must not change a table the receiver kept)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise ValueError("an Arrow table was sent, but pyarrow is not installed on this side; "
                         "install it in this environment") from None
    stream = memoryview(buffer)[offset:offset + size]
    if copy and not isinstance(buffer, bytes):
        stream = memoryview(bytes(stream))  # the stream's ``size`` bytes: one copy, one read
    table = pa.ipc.open_stream(pa.py_buffer(stream)).read_all()
    if kind == "batch":
        batches = table.to_batches()
        return batches[0] if len(batches) == 1 else table.combine_chunks().to_batches()[0]
    if kind == "pandas":
        return table.to_pandas()
    return table
