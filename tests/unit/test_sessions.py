from __future__ import annotations

import pytest

from runtime.pool.sessions import SessionQuota, SessionStore


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_open_touch_expire() -> None:
    clock = Clock()
    store = SessionStore(max_sessions=10, default_ttl_s=5, clock=clock)
    a = store.open("a")
    b = store.open(ttl_s=50)
    assert len(store) == 2 and len(b.id) == 32
    clock.now = 104
    assert store.open("a") is a  # touched at 104
    clock.now = 108
    assert store.expire() == []
    clock.now = 110
    assert [s.id for s in store.expire()] == ["a"] and store.get(b.id) is b


def test_quota_is_an_error_not_an_eviction() -> None:
    store = SessionStore(max_sessions=2, default_ttl_s=5, clock=Clock())
    store.open("a")
    store.open("b")
    with pytest.raises(SessionQuota, match="max_sessions"):
        store.open("c")
    assert store.get("a") and store.get("b")
    store.open("a")  # existing sessions still work
    store.close("a")
    store.open("c")


def test_worker_gone_marks_pinned_sessions() -> None:
    store = SessionStore(max_sessions=10, default_ttl_s=5, clock=Clock())
    a, b = store.open("a"), store.open("b")
    a.worker_id, b.worker_id = "worker-1", "worker-2"
    assert store.worker_gone("worker-1", "recycled") == 1
    assert a.lost == "recycled" and b.lost is None
