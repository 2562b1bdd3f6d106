"""`TelemetryControl`: which worker events a pool's workers send to the host (Snakepit's
TelemetryControl: toggle, sampling, filter).

    pool.telemetry_control(sample=0.1, deny=["adapter.cache.*"])   # at run time
    [pools.default.telemetry]                                        # or from the start
    sample = 0.1
    deny = ["adapter.cache.*"]

Workers apply it before an event is buffered, so a muted event costs no IPC. It covers the
events that come from workers (``adapter.*`` and the worker runtime's own, such as
``worker.result.unserializable``), not the host's (``pool.*``, ``worker.*`` lifecycle events).
Globs match the names host subscribers see (``adapter.cache.miss``); ``deny`` wins over
``allow``; an empty ``allow`` allows everything. ``sample`` keeps that fraction of the allowed
events, each at random (counted events such as ``worker.result.unserializable`` are filtered,
never sampled: a sampled count would be wrong). This module is values only: no gRPC, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FIELDS = ("enabled", "sample", "allow", "deny")


def _globs(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"telemetry {name} must be a list of event-name globs such as "
                         f"['adapter.cache.*'], got {value!r}")
    globs = tuple(value)
    for glob in globs:
        if not isinstance(glob, str) or not glob:
            raise ValueError(f"telemetry {name} must hold non-empty strings (event-name globs "
                             f"such as 'adapter.cache.*'), got {glob!r} in {list(globs)!r}")
    return globs


@dataclass(frozen=True, slots=True)
class TelemetryControl:
    """What a pool's workers send of their events (see the module docstring)."""

    enabled: bool = True
    sample: float = 1.0  # the fraction of allowed events sent, 0..1
    allow: tuple[str, ...] = ()  # globs; empty: every event
    deny: tuple[str, ...] = ()  # globs; wins over allow

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"telemetry enabled must be true or false, got {self.enabled!r}")
        sample = self.sample
        if isinstance(sample, bool) or not isinstance(sample, (int, float)) or \
                math.isnan(sample) or not 0 <= sample <= 1:
            raise ValueError(f"telemetry sample must be a number from 0 to 1 (the fraction of "
                             f"events sent; 1 = all), got {sample!r}")
        object.__setattr__(self, "sample", float(sample))
        object.__setattr__(self, "allow", _globs("allow", self.allow))
        object.__setattr__(self, "deny", _globs("deny", self.deny))

    @property
    def is_default(self) -> bool:
        """Everything is sent: workers need not be told."""
        return self == DEFAULT

    def updated(self, *, enabled: bool | None = None, sample: float | None = None,
                allow: Iterable[str] | None = None,
                deny: Iterable[str] | None = None) -> TelemetryControl:
        """This control with the given fields replaced (None: kept)."""
        return TelemetryControl(
            self.enabled if enabled is None else enabled,
            self.sample if sample is None else sample,
            self.allow if allow is None else allow,  # type: ignore[arg-type]
            self.deny if deny is None else deny)  # type: ignore[arg-type]

    @classmethod
    def from_table(cls, table: Any) -> TelemetryControl:
        """From a config table (``[pools.x.telemetry]``) or a control; ValueError names what is
        wrong."""
        if isinstance(table, TelemetryControl):
            return table
        if not isinstance(table, Mapping):
            raise ValueError(f"telemetry must be a table with keys {', '.join(FIELDS)}, "
                             f"got {table!r}")
        unknown = sorted(set(table) - set(FIELDS))
        if unknown:
            raise ValueError(f"telemetry has unknown key {unknown[0]!r}; accepted keys: "
                             f"{', '.join(FIELDS)}")
        return DEFAULT.updated(**table)


DEFAULT = TelemetryControl()
