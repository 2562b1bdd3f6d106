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

import functools
import json
import sys
from dataclasses import dataclass
from typing import Any

KINDS = ("table", "batch", "pandas")


@dataclass(frozen=True, slots=True)
class Encoded:
    """An Arrow value ready to travel as its IPC stream. The stream is not built up front: it
    is written straight into where it goes (`write_into`: an arena, or a buffer its exact
    size), so the table's buffers are copied once on the way out."""

    table: Any  # a pyarrow Table or RecordBatch (a DataFrame is converted when encoded)
    kind: str
    nbytes: int  # the stream's size, measured without writing it

    def raw(self) -> tuple[Encoded, str]:
        """(this value, which `copy_into` / `to_bytes` write, and the layout that names it
        Arrow)."""
        return self, json.dumps({"arrow": self.kind, "size": self.nbytes})

    def write_into(self, dest: Any) -> None:
        """Write the stream into ``dest``, a writable buffer of exactly ``nbytes``."""
        import pyarrow as pa

        sink = pa.FixedSizeBufferWriter(pa.py_buffer(dest))
        _write(sink, self.table)

    def to_bytes(self) -> bytes:
        out = bytearray(self.nbytes)
        self.write_into(out)
        return bytes(out)


def encoded(value: Any) -> Encoded | None:
    """``value`` as an `Encoded` IPC stream when it travels as Arrow; None otherwise."""
    kind = kind_of(value)
    if kind is None:
        return None
    import pyarrow as pa

    table = pa.Table.from_pandas(value, preserve_index=True) if kind == "pandas" else value
    mock = pa.MockOutputStream()
    _write(mock, table)
    return Encoded(table, kind, int(mock.size()))


def copy_into(dest: Any, offset: int, data: Any) -> None:
    """Put raw ``data`` (bytes-like, or an `Encoded` stream) at ``offset`` of the writable
    buffer ``dest``."""
    if isinstance(data, Encoded):
        data.write_into(memoryview(dest)[offset:offset + data.nbytes])
    else:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        dest[offset:offset + n] = data


def to_bytes(data: Any) -> bytes:
    """Raw ``data`` (bytes-like, or an `Encoded` stream) as bytes, for inside a message."""
    return data.to_bytes() if isinstance(data, Encoded) else bytes(data)


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


@functools.cache  # a failed import is not cached by Python: asked once per process
def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _write(sink: Any, table: Any) -> None:
    import pyarrow as pa

    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)


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
