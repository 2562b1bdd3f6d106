"""Sessions a worker knows of: the ones a Snakepit-style host opened with InitializeSession.

A pit host keeps its own session table (`runtime.pool.sessions`) and tells the worker when a
session ends; a host speaking Snakepit's protocol may open sessions and never close them. So
the worker bounds its own table like the host's: at most ``max_sessions`` entries, each
forgotten once unused for ``ttl_s`` (a call in the session or a heartbeat naming it counts as
use). A forgotten session's tool state goes with it. Used from gRPC threads: one lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class SessionInfo:
    created: float  # unix time
    metadata: dict[str, str] = field(default_factory=dict)
    last_used: float = 0.0  # clock() time


class SessionTable:
    def __init__(self, max_sessions: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, SessionInfo] = OrderedDict()  # least recent first

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def open(self, session_id: str, metadata: dict[str, str]) -> tuple[bool, list[str]]:
        """Register (or touch) a session: (opened, ids of the sessions expired to make room).
        Not opened when the table is full of sessions still in use."""
        with self._lock:
            expired = self._expire()
            info = self._sessions.get(session_id)
            if info is None:
                if len(self._sessions) >= self.max_sessions:
                    return False, expired
                info = self._sessions[session_id] = SessionInfo(time.time(), metadata)
            info.last_used = self._clock()
            self._sessions.move_to_end(session_id)
            return True, expired

    def touch(self, session_id: str) -> None:
        with self._lock:
            info = self._sessions.get(session_id)
            if info is not None:
                info.last_used = self._clock()
                self._sessions.move_to_end(session_id)

    def get(self, session_id: str) -> SessionInfo | None:
        return self._sessions.get(session_id)

    def pop(self, session_id: str) -> SessionInfo | None:
        with self._lock:
            return self._sessions.pop(session_id, None)

    def _expire(self) -> list[str]:
        cutoff = self._clock() - self.ttl_s
        gone = []
        while self._sessions:
            sid, info = next(iter(self._sessions.items()))
            if info.last_used > cutoff:
                break
            del self._sessions[sid]
            gone.append(sid)
        return gone
