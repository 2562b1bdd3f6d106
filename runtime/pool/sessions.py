"""The host's session store: which sessions exist, when they expire, which worker holds them.

A session's state lives in one worker (``ctx.session``), so calls of a session prefer that
worker ("pinned"). Affinity modes say what happens when it is busy or gone:

    hint              busy -> any worker; gone -> re-pin silently to the next worker used
    strict_queue      busy -> wait for it (within the call's deadline); gone -> error
    strict_fail_fast  busy -> WorkerBusy at once;                        gone -> error

"Gone" (crashed, hung or recycled) is remembered, so strict calls fail with
SessionWorkerUnavailable instead of silently reading state that is not there. Pure
bookkeeping with an injected clock; the pool does the I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SessionQuota


@dataclass(slots=True)
class Session:
    id: str
    created: float
    last_used: float
    ttl_s: float
    worker_id: str | None = None  # the worker holding its state
    lost: str | None = None  # why that worker is gone: "crashed", "hung", "recycled"

    def expired(self, now: float) -> bool:
        return now - self.last_used > self.ttl_s


class SessionStore:
    def __init__(self, max_sessions: int, default_ttl_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_created: Callable[[Session], None] | None = None) -> None:
        self.max_sessions = max_sessions
        self.on_created = on_created
        self.default_ttl_s = default_ttl_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def open(self, session_id: str | None = None, ttl_s: float | None = None) -> Session:
        """The session ``session_id`` (created when new), touched. Raises SessionQuota."""
        sid = session_id or uuid.uuid4().hex
        now = self._clock()
        session = self._sessions.get(sid)
        if session is None:
            if len(self._sessions) >= self.max_sessions:
                raise SessionQuota(
                    f"{len(self._sessions)} sessions are open, the pool's max_sessions; "
                    f"session {sid!r} was not created",
                    details={"max_sessions": self.max_sessions},
                    hint="close sessions you no longer need, shorten their ttl, or raise "
                         "max_sessions")
            session = Session(sid, now, now, ttl_s or self.default_ttl_s)
            self._sessions[sid] = session
            if self.on_created is not None:
                self.on_created(session)
        else:
            session.last_used = now
            if ttl_s:
                session.ttl_s = ttl_s
        return session

    def close(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def expire(self) -> list[Session]:
        """Remove and return the sessions unused for longer than their ttl."""
        now = self._clock()
        gone = [s for s in self._sessions.values() if s.expired(now)]
        for s in gone:
            del self._sessions[s.id]
        return gone

    def worker_gone(self, worker_id: str, reason: str) -> int:
        """Sessions pinned to ``worker_id`` lose their state; returns how many."""
        n = 0
        for s in self._sessions.values():
            if s.worker_id == worker_id:
                s.lost = reason
                n += 1
        return n
