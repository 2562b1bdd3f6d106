"""pit's pytest plugin, registered through the ``pytest11`` entry point (name ``pit``;
``pytest -p no:pit`` turns it off). It gives a project that uses pit:

- **A state dir per test session.** ``PIT_STATE_DIR`` and ``PIT_INDEX_DIR`` point into
  pytest's temp dir for the whole session, so tests never touch the project's ``.pit/`` nor
  show up in the user's ``pit status``. (A pool with its own ``python``/``requirements``
  builds its venv there once per session; uv's cache makes that quick.)
- **The** ``pit_pool`` **fixture** (`PoolFixture`): a pool of the project's config, found
  from pytest's rootdir upwards, named by a marker or an indirect parameter, or pools made in
  the test with ``pit_pool.factory(adapter=..., size=...)``:

      @pytest.mark.pit_pool("weather")
      def test_a(pit_pool): pit_pool.execute("greet", {"name": "x"})

      @pytest.mark.parametrize("pit_pool", ["weather", "other"], indirect=True)
      def test_b(pit_pool): ...

  With neither, the config's ``default_pool`` (or its only pool). Its pools close when the
  test ends.
- **A leak check.** A test fails (at teardown) when worker processes of pools it started are
  still alive after it: only the host instances registered while the test ran count (see
  `runtime.testing.leaks`), never another pit process's workers, nor those of a pool a
  module- or session-scoped fixture started. The leaked pools are closed and their workers
  killed, so the next test starts clean.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..config import PIT_STATE_DIR

if TYPE_CHECKING:
    from .pool_fixture import PoolFixture

# pytest imports this module at every start, pools or not: what the fixtures need (psutil,
# the registry, the pool and gRPC) is imported when a fixture first runs.
MARKER = "pit_pool"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(name): the pool of the project's pit.toml that the pit_pool "
                   "fixture starts for this test")


@pytest.fixture(scope="session", autouse=True)
def pit_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's own PIT_STATE_DIR (and PIT_INDEX_DIR beside it)."""
    from ..control.index import PIT_INDEX_DIR

    root = tmp_path_factory.mktemp("pit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PIT_STATE_DIR, str(root / "state"))
        mp.setenv(PIT_INDEX_DIR, str(root / "index"))
        yield root / "state"


_CALL_STATE_DIR = pytest.StashKey[str]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """The state dir the test's own body ran with: a test (or a conftest) may point
    PIT_STATE_DIR elsewhere with monkeypatch, which is undone before the leak check runs."""
    yield
    item.stash[_CALL_STATE_DIR] = os.environ.get(PIT_STATE_DIR, "")


@pytest.fixture(autouse=True)
def _pit_leak_check(request: pytest.FixtureRequest, pit_state_dir: Path) -> Iterator[None]:
    from .leaks import Leak, alive_after, instance_ids, kill

    before = instance_ids(_state_dir(pit_state_dir))
    yield
    # where the test's hosts registered: the dir its body saw (see pytest_runtest_call)
    called = Path(request.node.stash.get(_CALL_STATE_DIR, "") or _state_dir(pit_state_dir))
    started = instance_ids(called) - (before if called == _state_dir(pit_state_dir) else set())
    if not started:
        return
    left = alive_after(started)
    if not left:
        return
    from ..pool.sync_pool import close_open_pools

    close_open_pools(started)  # else a forgotten pool would replace the workers killed here
    kill(left + alive_after(started, grace=0))
    pytest.fail(Leak(started, tuple(p.pid for p in left)).message(), pytrace=False)


def _state_dir(default: Path) -> Path:
    return Path(os.environ.get(PIT_STATE_DIR) or default)


@pytest.fixture
def pit_pool(request: pytest.FixtureRequest) -> Iterator[PoolFixture]:
    """A pool of the project's config (see the module's docstring), or ``.factory()``."""
    from .pool_fixture import PoolFixture

    name = getattr(request, "param", None)
    marker = request.node.get_closest_marker(MARKER)
    if name is None and marker is not None:
        name = marker.args[0] if marker.args else marker.kwargs.get("name")
    fixture = PoolFixture(request.config.rootpath, name)
    try:
        yield fixture
    finally:
        fixture.close()
