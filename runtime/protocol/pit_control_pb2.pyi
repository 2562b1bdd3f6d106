from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("pool", "interval_ms")
    POOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    interval_ms: int
    def __init__(self, pool: _Optional[str] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("json", "taken_at_ns")
    JSON_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_NS_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    taken_at_ns: int
    def __init__(self, json: _Optional[bytes] = ..., taken_at_ns: _Optional[int] = ...) -> None: ...

class OutputRequest(_message.Message):
    __slots__ = ("pool", "worker", "since_ns", "follow")
    POOL_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    pool: str
    worker: str
    since_ns: int
    follow: bool
    def __init__(self, pool: _Optional[str] = ..., worker: _Optional[str] = ..., since_ns: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class OutputLine(_message.Message):
    __slots__ = ("pool", "worker", "text", "at_ns", "dropped")
    POOL_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AT_NS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    pool: str
    worker: str
    text: str
    at_ns: int
    dropped: int
    def __init__(self, pool: _Optional[str] = ..., worker: _Optional[str] = ..., text: _Optional[str] = ..., at_ns: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopReply(_message.Message):
    __slots__ = ("outcome", "pid")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    pid: int
    def __init__(self, outcome: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...
