from __future__ import annotations

import pytest

from runtime.pool.resilience import CircuitBreaker, RetryPolicy


def test_retry_delays_grow_with_jitter_and_stop() -> None:
    policy = RetryPolicy(max_retries=3, base_delay_s=0.1, max_delay_s=0.3, jitter=0.5)
    assert policy.delay(1, rand=lambda: 0.5) == 0.1
    assert policy.delay(2, rand=lambda: 0.5) == 0.2
    assert policy.delay(3, rand=lambda: 0.5) == 0.3  # capped
    assert policy.delay(1, rand=lambda: 0.0) == pytest.approx(0.05)
    assert policy.delay(1, rand=lambda: 1.0) == pytest.approx(0.15)
    assert policy.delay(4) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_on_a_storm_and_recovers() -> None:
    clock = Clock()
    cb = CircuitBreaker(threshold=2, window_s=10, reset_s=5, clock=clock)
    cb.record_failure("segfault")
    cb.record_failure("segfault")
    assert cb.state == "closed" and cb.allow()
    cb.record_failure("oom")
    assert cb.state == "open" and not cb.allow()
    assert cb.recent_causes() == ["segfault", "segfault", "oom"]
    clock.now = 5.0
    assert cb.state == "half_open"
    assert cb.allow() and not cb.allow()  # one trial at a time
    cb.record_success()
    assert cb.state == "closed" and cb.allow()


def test_breaker_failure_while_half_open_reopens() -> None:
    clock = Clock()
    cb = CircuitBreaker(threshold=0, window_s=10, reset_s=5, clock=clock)
    cb.record_failure("abort")
    assert cb.state == "open"
    clock.now = 6.0
    assert cb.allow()
    cb.record_failure("abort")
    assert cb.state == "open" and cb.retry_after() == 5.0


def test_old_failures_leave_the_window() -> None:
    clock = Clock()
    cb = CircuitBreaker(threshold=1, window_s=10, reset_s=5, clock=clock)
    cb.record_failure("exit")
    clock.now = 11.0
    cb.record_failure("exit")
    assert cb.state == "closed"
