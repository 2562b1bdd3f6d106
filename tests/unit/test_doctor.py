"""`pit doctor`'s checks that need no project: how failures are reported, the interpreters."""

from __future__ import annotations

import pytest

from runtime import doctor
from runtime.envs import Interpreter
from runtime.errors import EnvironmentProblem


def test_pit_s_own_error_is_an_ordinary_failed_check_with_its_hint() -> None:
    def missing() -> doctor.Check:
        raise EnvironmentProblem("python = '3.99': no installed interpreter matches",
                                 hint="install that version")

    assert doctor._guard("pool a: python", missing) == doctor.Check(
        "pool a: python", "fail", "python = '3.99': no installed interpreter matches",
        "install that version")


def test_a_check_that_breaks_otherwise_is_a_pit_bug() -> None:
    def broken() -> doctor.Check:
        raise KeyError("x")

    check = doctor._guard("thing", broken)
    assert check.status == "fail" and "the check itself failed" in check.message
    assert "pit bug" in check.remediation


def found(*versions: tuple[int, int, int]) -> list[Interpreter]:
    return [Interpreter(f"/py/{'.'.join(map(str, v))}", v, "CPython") for v in versions]


def test_interpreters_are_listed_numerically_and_too_old_ones_are_flagged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runtime.envs.discover", lambda: found(
        (3, 13, 0), (3, 9, 18), (3, 12, 1), (3, 6, 15), (3, 10, 13)))
    check = doctor._interpreters()
    assert check.status == "warn" and "3.10 or newer" in check.remediation
    usable, old = check.message.split("; too old for pit workers")
    assert usable == "3.10.13 (/py/3.10.13), 3.12.1 (/py/3.12.1), 3.13.0 (/py/3.13.0)"
    assert old.endswith("3.6.15 (/py/3.6.15), 3.9.18 (/py/3.9.18)")


def test_only_supported_interpreters_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runtime.envs.discover", lambda: found((3, 12, 1), (3, 10, 13)))
    assert doctor._interpreters() == doctor.Check(
        "interpreters", "pass", "3.10.13 (/py/3.10.13), 3.12.1 (/py/3.12.1)")
