"""Session handles: calls that carry a session id, and a close that ends the session.

    with pool.session() as s:                  # sync Pool
        s.execute("session_counter")           # -> runs where the session's state lives
    async with apool.session(ttl_s=60) as s:   # AsyncPool
        await s.execute("session_counter")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol


class AsyncCalls(Protocol):
    """The calls of an `AsyncPool` a session handle forwards (with its session id)."""

    @property
    def execute(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def stream(self) -> Callable[..., AsyncIterator[Any]]: ...
    @property
    def close_session(self) -> Callable[[str], Awaitable[bool]]: ...


class SyncCalls(Protocol):
    """The calls of a `Pool` a session handle forwards (with its session id)."""

    @property
    def execute(self) -> Callable[..., Any]: ...
    @property
    def submit(self) -> Callable[..., Any]: ...
    @property
    def stream(self) -> Callable[..., Iterator[Any]]: ...
    @property
    def close_session(self) -> Callable[[str], bool]: ...


class AsyncSession:
    def __init__(self, pool: AsyncCalls, session_id: str, affinity: str) -> None:
        self.pool = pool
        self.id = session_id
        self.affinity = affinity

    async def execute(self, tool: str, args: Mapping[str, Any] | None = None,
                      **options: Any) -> Any:
        options.setdefault("affinity", self.affinity)
        return await self.pool.execute(tool, args, session_id=self.id, **options)

    def stream(self, tool: str, args: Mapping[str, Any] | None = None,
               **options: Any) -> AsyncIterator[Any]:
        return self.pool.stream(tool, args, session_id=self.id, **options)

    async def close(self) -> None:
        """End the session; the worker that held it drops its state."""
        await self.pool.close_session(self.id)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SessionHandle:
    def __init__(self, pool: SyncCalls, session_id: str, affinity: str) -> None:
        self.pool = pool
        self.id = session_id
        self.affinity = affinity

    def execute(self, tool: str, args: Mapping[str, Any] | None = None, **options: Any) -> Any:
        options.setdefault("affinity", self.affinity)
        return self.pool.execute(tool, args, session_id=self.id, **options)

    def submit(self, tool: str, args: Mapping[str, Any] | None = None, **options: Any) -> Any:
        options.setdefault("affinity", self.affinity)
        return self.pool.submit(tool, args, session_id=self.id, **options)

    def stream(self, tool: str, args: Mapping[str, Any] | None = None,
               **options: Any) -> Iterator[Any]:
        return self.pool.stream(tool, args, session_id=self.id, **options)

    def close(self) -> None:
        """End the session; the worker that held it drops its state."""
        self.pool.close_session(self.id)

    def __enter__(self) -> SessionHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
