"""The session-affinity decision, without a pool: every mode against every state of the
session's pinned worker."""

from __future__ import annotations

import pytest

from runtime.pool.affinity import decide

MODES = ("hint", "strict_queue", "strict_fail_fast")


@pytest.mark.parametrize("mode", MODES)
def test_an_unpinned_session_takes_any_worker(mode: str) -> None:
    assert decide(mode, pinned=False, gone=False) == "any"


@pytest.mark.parametrize(("mode", "expected"), [
    ("hint", "repin"), ("strict_queue", "lost"), ("strict_fail_fast", "lost")])
def test_a_gone_worker_is_repinned_only_in_hint_mode(mode: str, expected: str) -> None:
    assert decide(mode, pinned=True, gone=True) == expected
    assert decide(mode, pinned=True, gone=True, free=True) == expected  # gone wins


@pytest.mark.parametrize("mode", MODES)
def test_a_live_pinned_worker_is_asked_first_and_used_when_free(mode: str) -> None:
    assert decide(mode, pinned=True, gone=False) == "try"
    assert decide(mode, pinned=True, gone=False, free=True) == "pinned"


@pytest.mark.parametrize(("mode", "expected"), [
    ("hint", "any"), ("strict_queue", "wait"), ("strict_fail_fast", "busy")])
def test_a_busy_pinned_worker(mode: str, expected: str) -> None:
    assert decide(mode, pinned=True, gone=False, free=False) == expected
