"""Retry policy and circuit breaker: small, pure, clock-injected, unit-tested.

The pool uses them like this: a call that fails because its worker died is retried on another
worker when it is idempotent (`RetryPolicy`); crashes a call can be blamed for feed the pool's
`CircuitBreaker`, which fails new calls fast while a crash storm lasts.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    jitter: float = 0.5  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None: give up."""
        if attempt > self.max_retries:
            return None
        base = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
        return base * (1 - self.jitter + 2 * self.jitter * rand())


class CircuitBreaker:
    """closed -> (more than ``threshold`` failures within ``window_s``) -> open
    open -> (after ``reset_s``) -> half_open: one trial call is let through
    half_open -> success: closed | failure: open again."""

    def __init__(self, threshold: int = 5, window_s: float = 30.0, reset_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.window_s, self.reset_s = threshold, window_s, reset_s
        self._clock = clock
        self._failures: deque[tuple[float, str]] = deque()
        self._opened_at: float | None = None
        self._trial_out = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_s else "open"

    def record_failure(self, cause: str) -> None:
        now = self._clock()
        self._failures.append((now, cause))
        while self._failures and now - self._failures[0][0] > self.window_s:
            self._failures.popleft()
        if self.state == "half_open" or len(self._failures) > self.threshold:
            self._opened_at = now
            self._trial_out = False

    def record_success(self) -> None:
        if self._opened_at is not None and self.state == "half_open":
            self._opened_at = None
            self._failures.clear()
            self._trial_out = False

    def allow(self) -> bool:
        """May a call go ahead? In half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def recent_causes(self) -> list[str]:
        return [cause for _, cause in self._failures]

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))
