"""Retry policy, circuit breaker and the pool's crash barrier that combines them.

The pool uses them like this: a call that fails because its worker died is retried on another
worker when it is idempotent (`RetryPolicy`); crashes a call can be blamed for feed the pool's
`CircuitBreaker`, which fails new calls fast while a crash storm lasts. Its changes of state
are events (``pool.circuit.opened`` / ``half_open`` / ``closed``), as is a call's quarantine
(``pool.call.poisoned``); `CircuitBreaker.reset` closes it by hand (``pool.reset_circuit()``).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import PoolConfig
from ..errors import CircuitOpen, PitError, PoisonCall
from .crash import ATTRIBUTABLE
from .events import pool_event

# (new state, measurements, metadata) of a circuit breaker's change of state
OnChange = Callable[[str, dict[str, Any], dict[str, str]], None]


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
                 clock: Callable[[], float] = time.monotonic,
                 on_change: OnChange | None = None) -> None:
        self.threshold, self.window_s, self.reset_s = threshold, window_s, reset_s
        self._clock = clock
        self._on_change = on_change
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
        before = self.state
        if before == "half_open" or len(self._failures) > self.threshold:
            self._opened_at = now
            self._trial_out = False
            if before != "open":
                self._changed("open", {"failures": len(self._failures)},
                              {"causes": ",".join(self.recent_causes()[-5:]),
                               "from": before})

    def record_success(self) -> None:
        if self._opened_at is not None and self.state == "half_open":
            self._close("trial_succeeded")

    def reset(self) -> bool:
        """Close the circuit by hand (and forget the failures counted); False if it was
        closed already."""
        if self._opened_at is None:
            self._failures.clear()
            return False
        self._close("manual")
        return True

    def _close(self, reason: str) -> None:
        open_s = self._clock() - self._opened_at if self._opened_at is not None else 0.0
        self._opened_at = None
        self._failures.clear()
        self._trial_out = False
        self._changed("closed", {"open_s": round(open_s, 3)}, {"reason": reason})

    def _changed(self, state: str, measurements: dict[str, Any],
                 metadata: dict[str, str]) -> None:
        if self._on_change is not None:
            self._on_change(state, measurements, metadata)

    def allow(self) -> bool:
        """May a call go ahead? In half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_out:
            self._trial_out = True
            open_s = self._clock() - self._opened_at if self._opened_at is not None else 0.0
            self._changed("half_open", {"open_s": round(open_s, 3)}, {})
            return True
        return False

    def recent_causes(self) -> list[str]:
        return [cause for _, cause in self._failures]

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))


def call_key(req: Any) -> str:
    """Identifies "the same call" (tool + arguments) for poison-call quarantine."""
    digest = hashlib.blake2b(req.tool_name.encode(), digest_size=16)
    for name in sorted(req.parameters):
        digest.update(name.encode() + b"\0" + req.parameters[name].value + b"\0")
    for name in sorted(req.binary_parameters):
        digest.update(name.encode() + b"\1" + req.binary_parameters[name] + b"\0")
    return digest.hexdigest()


class CrashBarrier:
    """A pool's defences, together: retry policy, circuit breaker, poison-call quarantine."""

    def __init__(self, config: PoolConfig) -> None:
        self.name = config.name
        self.poison_after = config.poison_after
        self.retry_policy = RetryPolicy(max_retries=config.max_retries)
        self.breaker = CircuitBreaker(config.circuit_threshold, config.circuit_window_s,
                                      config.circuit_reset_s, on_change=self._circuit_changed)
        self._poison: dict[str, int] = {}  # call key -> workers it crashed

    def refusal(self, req: Any) -> PitError | None:
        """Fail fast: the circuit is open, or this exact call keeps killing workers."""
        if not self.breaker.allow():
            causes = ", ".join(self.breaker.recent_causes()[-5:])
            return CircuitOpen(
                f"pool {self.name!r}: circuit open after a crash storm (recent causes: "
                f"{causes}); retry in {self.breaker.retry_after():.1f} s",
                details={"pool": self.name, "causes": self.breaker.recent_causes()},
                hint="look at the workers' output and the crash causes; calls resume after "
                     "circuit_reset_s")
        if self._poison:
            crashes = self._poison.get(call_key(req), 0)
            if crashes >= self.poison_after:
                return PoisonCall(
                    f"call to {req.tool_name!r} with these arguments has cost {crashes} "
                    "workers (they crashed, or were killed when it would not stop after a "
                    "timeout); refusing to run it again",
                    details={"tool": req.tool_name, "crashes": crashes},
                    hint="fix the tool or its input; the quarantine ends when the pool restarts")
        return None

    def has_poison(self) -> bool:
        """Whether any call is close to (or past) being refused as poison."""
        return bool(self._poison)

    def after_death(self, req: Any, err: PitError) -> PitError | None:
        """A call's worker died under it (any path: lane, direct, unary, stream): blame the
        call where the cause allows, then the refusal that now stands, if any (it is
        poisoned, or the circuit opened)."""
        self.blame(req, err)
        return self.refusal(req)

    def blame(self, req: Any, err: PitError) -> None:
        """A call was running when its worker died of a cause it may have provoked."""
        if err.details.get("culprit") and err.details.get("cause") in ATTRIBUTABLE:
            self.blame_stuck(req)

    def blame_stuck(self, req: Any) -> None:
        """Count a worker this call is known to have cost (it crashed it, or would not stop
        when cancelled) towards its poison_after."""
        key = call_key(req)
        self._poison[key] = crashes = self._poison.get(key, 0) + 1
        if crashes == self.poison_after:  # refused from now on
            pool_event("pool.call.poisoned", self.name, {"tool": req.tool_name},
                       crashes=crashes)

    def _circuit_changed(self, state: str, measurements: dict[str, Any],
                         metadata: dict[str, str]) -> None:
        pool_event(CIRCUIT_EVENTS[state], self.name, metadata, **measurements)


CIRCUIT_EVENTS = {"open": "pool.circuit.opened", "half_open": "pool.circuit.half_open",
                  "closed": "pool.circuit.closed"}
