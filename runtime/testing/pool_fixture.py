"""`PoolFixture`: what the pytest plugin's ``pit_pool`` fixture gives a test.

    @pytest.mark.pit_pool("weather")               # a pool of the project's pit.toml
    def test_greet(pit_pool: PoolFixture) -> None:
        assert pit_pool.execute("greet", {"name": "pit"}) == "hello pit"

    def test_small(pit_pool: PoolFixture) -> None:   # a pool made for the test
        pool = pit_pool.factory(adapter="weather:WeatherAdapter", size=1)
        assert pool.execute("greet", {"name": "pit"}) == "hello pit"

The named pool starts on first use; every pool is closed when the test ends. Pools run with
the project's root (the config's folder) on the workers' ``sys.path``, so a test passes
whatever folder pytest was started from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import PitConfig, load_config, make_pool_config
from ..pool.pool_choice import choose_default
from ..pool.sync_pool import Pool, Pools


class PoolFixture:
    """A pool of the project's config (``.pool``, or any `Pool` method on the fixture
    itself), and ``factory`` for pools made in the test."""

    def __init__(self, root: Path, name: str | None) -> None:
        self.root = root  # where the config is looked for (pytest's rootdir)
        self.name = name  # the pool asked for by marker or parameter; None: the default
        self._config: PitConfig | None = None
        self._pool: Pool | None = None
        self._owned: list[Pools] = []

    @property
    def config(self) -> PitConfig:
        """The project's config, found from pytest's rootdir upwards (or ``PIT_CONFIG``)."""
        if self._config is None:
            self._config = load_config(cwd=self.root)
        return self._config

    @property
    def pool(self) -> Pool:
        """The pool named by ``@pytest.mark.pit_pool(NAME)`` or an indirect parameter, else
        the config's default pool (`pool_choice.choose_default`); started on first use."""
        if self._pool is None:
            pools = list(self.config.pools)
            name = self.name or choose_default(None, pools, lambda _: False,
                                               preferred=self.config.default_pool,
                                               how_to_name="@pytest.mark.pit_pool(NAME)")
            self._pool = self._start(self.config, name)
        return self._pool

    def factory(self, adapter: str | None = None, size: int = 1, *, name: str = "test",
                **options: Any) -> Pool:
        """A started pool of ``adapter`` (``"module:Class"``, modules found from the project's
        root; None: the showcase adapter) with ``size`` workers and any other pool option of
        pit.toml; closed when the test ends."""
        if adapter is not None:
            options["adapter"] = adapter
        pool_config = make_pool_config(name, where="pit_pool.factory()", size=size, **options)
        config = dataclasses.replace(self.config, pools={name: pool_config})
        return self._start(config, name)

    def _start(self, config: PitConfig, name: str) -> Pool:
        base = config.path.parent if config.path else self.root
        pools = Pools(config, only=[name], python_path=[str(base)])
        self._owned.append(pools)
        pools.start()
        return pools[name]

    def close(self) -> None:
        """Close every pool the fixture started (the fixture's teardown)."""
        while self._owned:
            self._owned.pop().close()

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.pool, attr)

