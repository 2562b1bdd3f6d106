"""Telemetry control without processes: the value and its checks, the config table, the
worker's filter as the control messages set it, and the circuit breaker's events."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.pool.host.telemetry_relay import control_messages
from runtime.pool.resilience import CircuitBreaker
from runtime.protocol import CONTROL_APPLIED, RESULT_UNSERIALIZABLE
from runtime.telemetry.control import TelemetryControl
from runtime.worker import telemetry as worker_telemetry


@pytest.mark.parametrize(("changes", "message"), [
    ({"sample": 1.5}, "sample must be a number from 0 to 1"),
    ({"sample": -0.1}, "sample must be a number from 0 to 1"),
    ({"sample": float("nan")}, "sample must be a number from 0 to 1"),
    ({"sample": True}, "sample must be a number from 0 to 1"),
    ({"allow": "adapter.*"}, "allow must be a list of event-name globs"),
    ({"deny": ["adapter.a", 3]}, "deny must hold non-empty strings"),
    ({"deny": [""]}, "deny must hold non-empty strings"),
    ({"enabled": "yes"}, "enabled must be true or false"),
])
def test_bad_values_are_refused_with_what_was_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TelemetryControl().updated(**changes)


def test_updated_keeps_what_is_not_given() -> None:
    control = TelemetryControl().updated(sample=0.5).updated(deny=["adapter.x.*"])
    assert control == TelemetryControl(sample=0.5, deny=("adapter.x.*",))
    assert not control.is_default and TelemetryControl().is_default
    assert control.updated(sample=1, deny=[]).is_default


def test_the_config_table_is_checked_and_named(tmp_path: Path) -> None:
    path = tmp_path / "pit.toml"
    path.write_text('[pools.a.telemetry]\nsample = 0.25\ndeny = ["adapter.cache.*"]\n')
    assert load_config(path).pools["a"].telemetry == TelemetryControl(
        sample=0.25, deny=("adapter.cache.*",))
    path.write_text('[pools.a.telemetry]\nsampel = 0.25\n')
    with pytest.raises(ConfigError, match=r"\[pools.a\]: telemetry has unknown key 'sampel'"):
        load_config(path)
    path.write_text('[pools.a.telemetry]\nsample = 2\n')
    with pytest.raises(ConfigError, match=r"telemetry sample must be a number from 0 to 1 .*got 2"):
        load_config(path)


def test_the_worker_filters_as_the_control_messages_say() -> None:
    buf = worker_telemetry.Buffer(100)  # a fresh one, not the worker's own
    name = worker_telemetry.host_name
    assert name("cache.miss") == "adapter.cache.miss"
    assert name(RESULT_UNSERIALIZABLE) == RESULT_UNSERIALIZABLE
    for message in control_messages(TelemetryControl(allow=("adapter.cache.*",),
                                                     deny=("adapter.cache.hit",)),
                                    host_names=True):
        buf.control(message.WhichOneof("control"), message)
    assert buf.filter is not None and buf.applied == 3
    assert buf.filter.admits("adapter.cache.miss")
    assert not buf.filter.admits("adapter.cache.hit")  # deny wins
    assert not buf.filter.admits("adapter.model.loaded")  # not allowed
    buf.count(RESULT_UNSERIALIZABLE, "t", "set", 1)  # not allowed either: not counted
    items, _ = buf.take()
    assert [i[0] for i in items] == [CONTROL_APPLIED] and items[0][1] == {"count": 3}
    assert buf.take()[0] == []  # acknowledged once
    for message in control_messages(TelemetryControl(), host_names=True):
        buf.control(message.WhichOneof("control"), message)
    assert buf.filter is None  # everything again: no per-event work


def test_a_worker_matching_its_own_names_gets_globs_without_the_adapter_prefix() -> None:
    toggle, sampling, filt = control_messages(
        TelemetryControl(enabled=False, sample=0.5, allow=("adapter.a.*", "worker.*")),
        host_names=False)
    assert toggle.toggle.enabled is False and sampling.sampling.sampling_rate == 0.5
    assert list(filt.filter.allow) == ["a.*", "worker.*"]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_reports_each_change_and_reset_closes_it() -> None:
    clock, changes = Clock(), []
    cb = CircuitBreaker(threshold=1, window_s=10, reset_s=5, clock=clock,
                        on_change=lambda state, m, meta: changes.append((state, m, meta)))
    cb.record_failure("exit")
    cb.record_failure("segfault")
    cb.record_failure("exit")  # open already: no second event
    assert changes == [("open", {"failures": 2}, {"causes": "exit,segfault", "from": "closed"})]
    clock.now = 5.0
    assert cb.allow() and not cb.allow()  # one trial
    cb.record_failure("exit")  # the trial failed: open again
    clock.now = 10.0
    assert cb.allow()
    cb.record_success()
    assert [c[0] for c in changes] == ["open", "half_open", "open", "half_open", "closed"]
    assert changes[2][2]["from"] == "half_open" and changes[-1][2] == {"reason":
                                                                         "trial_succeeded"}
    cb.record_failure("exit")
    cb.record_failure("exit")
    assert cb.reset() and cb.state == "closed" and cb.allow()
    assert changes[-1] == ("closed", {"open_s": 0.0}, {"reason": "manual"})
    assert not cb.reset()


@pytest.mark.parametrize("snakepit_host", [False, True])
def test_emit_is_muted_by_globs_on_the_names_its_host_sees(
        monkeypatch: pytest.MonkeyPatch, snakepit_host: bool) -> None:
    # pit's host sees adapter.<name>; a Snakepit host sees the name as emitted, and knows no
    # acknowledgement event
    buf = worker_telemetry.Buffer(100)
    monkeypatch.setattr(worker_telemetry, "buffer", buf)
    buf.snakepit_host = snakepit_host
    deny = "cache.*" if snakepit_host else "adapter.cache.*"
    for message in control_messages(TelemetryControl(deny=(deny,)), host_names=True):
        buf.control(message.WhichOneof("control"), message)
    assert worker_telemetry.emit("cache.miss", {"keys": 1}) is False
    assert worker_telemetry.emit("model.loaded") is True
    with pytest.raises(TypeError, match="must be a number or a string"):
        worker_telemetry.emit("cache.miss", {"keys": object()})  # checked, muted or not
    sent = [item[0] for item in buf.take()[0]]
    assert sent == ["model.loaded"] + ([] if snakepit_host else [CONTROL_APPLIED])
