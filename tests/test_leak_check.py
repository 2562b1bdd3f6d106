"""The suite's leak check (tests/conftest.py) judges only what a test itself started: another
pit process on the machine (a second checkout's tests, a demo) must not fail a teardown."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.registry import RegistryWriter
from tests.conftest import left_behind, registered_instances

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm here")


@pytest.fixture(scope="module")
def foreign_arena() -> Iterator[Path]:
    """An arena of another pit process; removed only after this module's tests and their
    teardowns (a module fixture outlives each test's state_dir teardown)."""
    path = SHM / f"pit-deadbeef-w1-leakcheck-{os.getpid()}"
    yield path
    path.unlink(missing_ok=True)


def test_an_arena_of_another_pit_process_does_not_fail_the_teardown(
        foreign_arena: Path) -> None:
    foreign_arena.write_bytes(b"")  # appears during the test, outlives its teardown


def test_what_is_left_behind_is_what_the_test_s_own_hosts_left(
        state_dir: Path, foreign_arena: Path) -> None:
    foreign_arena.write_bytes(b"")
    own_id = secrets.token_hex(4)
    run_dir = state_dir / "run" / own_id
    run_dir.mkdir(parents=True)
    writer = RegistryWriter(state_dir)  # registered as a host registers itself
    writer.instance_started(instance_id=own_id, token="t", control_address="",
                            config_path=None, run_dir=str(run_dir), pools="default")
    writer.instance_ended(own_id)
    writer.close()
    own_arena = SHM / f"pit-{own_id}-w1-leakcheck"
    own_arena.write_bytes(b"")
    try:
        instances = registered_instances(state_dir)
        assert [i.instance_id for i in instances] == [own_id]
        assert left_behind(instances) == ([str(own_arena)], [str(run_dir)])
    finally:
        own_arena.unlink()
        run_dir.rmdir()
    assert left_behind(instances) == ([], [])
